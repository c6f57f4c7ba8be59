//! Names the platforms where tasks are spawned with `clone(CLONE_VM | CLONE_VFORK)` (see
//! `src/vfork.rs`): Linux on the architectures whose kernel `sigaction`/`sigset_t` layout that
//! module writes by hand. Elsewhere spawning falls back to `fork`.

fn main() {
    cfg_aliases::cfg_aliases! {
        vfork_spawn: {
            all(
                target_os = "linux",
                any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "riscv64")
            )
        },
    }
}
