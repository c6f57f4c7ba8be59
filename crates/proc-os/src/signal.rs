//! Signal numbers: the core's [`Signal`] names and the platform's numbers (signal(7)).

use nix::sys::signal::Signal as NixSignal;
use proc_state::Signal;

/// The core's signals and nix's, which carry the platform's numbers.
const SIGNALS: [(Signal, NixSignal); 29] = [
    (Signal::Hup, NixSignal::SIGHUP),
    (Signal::Int, NixSignal::SIGINT),
    (Signal::Quit, NixSignal::SIGQUIT),
    (Signal::Ill, NixSignal::SIGILL),
    (Signal::Trap, NixSignal::SIGTRAP),
    (Signal::Abrt, NixSignal::SIGABRT),
    (Signal::Bus, NixSignal::SIGBUS),
    (Signal::Fpe, NixSignal::SIGFPE),
    (Signal::Kill, NixSignal::SIGKILL),
    (Signal::Usr1, NixSignal::SIGUSR1),
    (Signal::Segv, NixSignal::SIGSEGV),
    (Signal::Usr2, NixSignal::SIGUSR2),
    (Signal::Pipe, NixSignal::SIGPIPE),
    (Signal::Alrm, NixSignal::SIGALRM),
    (Signal::Term, NixSignal::SIGTERM),
    (Signal::Chld, NixSignal::SIGCHLD),
    (Signal::Cont, NixSignal::SIGCONT),
    (Signal::Stop, NixSignal::SIGSTOP),
    (Signal::Tstp, NixSignal::SIGTSTP),
    (Signal::Ttin, NixSignal::SIGTTIN),
    (Signal::Ttou, NixSignal::SIGTTOU),
    (Signal::Urg, NixSignal::SIGURG),
    (Signal::Xcpu, NixSignal::SIGXCPU),
    (Signal::Xfsz, NixSignal::SIGXFSZ),
    (Signal::Vtalrm, NixSignal::SIGVTALRM),
    (Signal::Prof, NixSignal::SIGPROF),
    (Signal::Winch, NixSignal::SIGWINCH),
    (Signal::Io, NixSignal::SIGIO),
    (Signal::Sys, NixSignal::SIGSYS),
];

/// The platform's number for `signal`; `None` only for a name this platform lacks.
pub fn signal_number(signal: Signal) -> Option<i32> {
    if let Signal::Other(number) = signal {
        return Some(number);
    }
    SIGNALS
        .iter()
        .find(|(ours, _)| *ours == signal)
        .map(|(_, nix)| *nix as i32)
        // A variant added to the core after this table: nix knows signals by the same names.
        .or_else(|| {
            signal
                .name()
                .parse::<NixSignal>()
                .ok()
                .map(|nix| nix as i32)
        })
}

/// The core's name for the platform's signal `number` ([`Signal::Other`] when it has none).
pub fn signal_from_number(number: i32) -> Signal {
    SIGNALS
        .iter()
        .find(|(_, nix)| *nix as i32 == number)
        .map_or(Signal::Other(number), |(ours, _)| *ours)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_numbers_round_trip() {
        for (ours, nix) in SIGNALS {
            assert_eq!(signal_number(ours), Some(nix as i32));
            assert_eq!(signal_from_number(nix as i32), ours);
        }
        assert_eq!(signal_number(Signal::Other(40)), Some(40));
        assert_eq!(signal_from_number(40), Signal::Other(40));
    }
}
