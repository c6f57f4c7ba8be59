//! MCP protocol versions (the spec's `schema/<version>/schema.ts`) and what each changes on the
//! wire for this server.

/// A protocol version this server speaks in the handshake (`initialize`) era.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum ProtocolVersion {
    /// `2024-11-05`: the baseline.
    V2024_11_05,
    /// `2025-03-26`: JSON-RPC batches must be accepted; tool annotations.
    V2025_03_26,
    /// `2025-06-18`: batches removed; `structuredContent`, `outputSchema`, `title`.
    V2025_06_18,
    /// `2025-11-25`: the last handshake-era version.
    V2025_11_25,
}

impl ProtocolVersion {
    /// Every supported version, oldest first.
    pub const ALL: [ProtocolVersion; 4] = [
        ProtocolVersion::V2024_11_05,
        ProtocolVersion::V2025_03_26,
        ProtocolVersion::V2025_06_18,
        ProtocolVersion::V2025_11_25,
    ];

    /// The version offered when the client asks for one we do not speak.
    pub const LATEST: ProtocolVersion = ProtocolVersion::V2025_11_25;

    /// The version string as it appears on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            ProtocolVersion::V2024_11_05 => "2024-11-05",
            ProtocolVersion::V2025_03_26 => "2025-03-26",
            ProtocolVersion::V2025_06_18 => "2025-06-18",
            ProtocolVersion::V2025_11_25 => "2025-11-25",
        }
    }

    /// Parses a version string; `None` for versions this server does not speak.
    pub fn parse(version: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == version)
    }

    /// Whether a line may hold a JSON array of messages (2025-03-26 only; removed in 2025-06-18).
    pub fn accepts_batches(self) -> bool {
        self == ProtocolVersion::V2025_03_26
    }

    /// Whether tools carry `title` and `outputSchema`, and results `structuredContent`
    /// (added in 2025-06-18).
    pub fn has_structured_content(self) -> bool {
        self >= ProtocolVersion::V2025_06_18
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_round_trip_and_unknown_ones_are_rejected() {
        for v in ProtocolVersion::ALL {
            assert_eq!(ProtocolVersion::parse(v.as_str()), Some(v));
        }
        assert_eq!(ProtocolVersion::parse("2026-07-28"), None);
        assert_eq!(ProtocolVersion::parse(""), None);
    }
}
