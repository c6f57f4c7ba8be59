//! Time as the core sees it: values handed in by the driver, never read from a clock.

use core::time::Duration;

/// A point on the driver's monotonic clock, in nanoseconds since an origin the driver picks
/// (for example the moment it started). Only differences between two `Instant`s mean anything.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(u64);

impl Instant {
    /// The instant `nanos` nanoseconds after the driver's origin.
    pub const fn from_nanos(nanos: u64) -> Self {
        Self(nanos)
    }

    /// Nanoseconds since the driver's origin.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// `self + duration`, saturating at the end of time instead of overflowing.
    pub fn saturating_add(self, duration: Duration) -> Self {
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        Self(self.0.saturating_add(nanos))
    }

    /// Time elapsed from `earlier` to `self`; zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

/// Both clocks at the moment an input happened.
///
/// `instant` drives every timer; `unix_ms` (wall-clock milliseconds since 1970-01-01T00:00:00Z)
/// is only shown to users, as RFC 3339 timestamps such as `started_at`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Now {
    /// Monotonic time: deadlines and durations.
    pub instant: Instant,
    /// Wall-clock time in milliseconds since the Unix epoch: timestamps for people.
    pub unix_ms: u64,
}

impl Now {
    /// Both clocks, for tests and drivers that build them by hand.
    pub const fn new(instant: Instant, unix_ms: u64) -> Self {
        Self { instant, unix_ms }
    }
}

/// Formats wall-clock milliseconds as an RFC 3339 UTC timestamp with millisecond precision,
/// e.g. `2026-11-22T04:21:12.345Z`.
pub fn rfc3339(unix_ms: u64) -> String {
    Rfc3339(unix_ms).to_string()
}

/// Wall-clock milliseconds that display (and serialize) as [`rfc3339`] does, without an
/// allocation of their own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rfc3339(pub u64);

impl core::fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let t = std::time::UNIX_EPOCH + Duration::from_millis(self.0);
        humantime::format_rfc3339_millis(t).fmt(f)
    }
}

impl serde::Serialize for Rfc3339 {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_utc_with_milliseconds() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_795_000_000_123), "2026-11-18T11:06:40.123Z");
    }

    #[test]
    fn instant_arithmetic_saturates() {
        let t = Instant::from_nanos(u64::MAX - 1);
        assert_eq!(
            t.saturating_add(Duration::from_secs(1)),
            Instant::from_nanos(u64::MAX)
        );
        assert_eq!(
            Instant::from_nanos(5).saturating_duration_since(t),
            Duration::ZERO
        );
    }
}
