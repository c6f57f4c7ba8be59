//! Pagination of list results (MCP "Utilities: Pagination"): an opaque `cursor` in, a
//! `nextCursor` out, and `-32602` for a cursor this server did not hand out.

/// Where a page starts: a position in a list, named by an opaque cursor string.
///
/// Cursors are `<list>:<position>` so a cursor from one list is refused by another; clients must
/// treat them as opaque.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageStart(pub u64);

/// Reads the `cursor` a client sent for list `kind`; `None` (no cursor) is the first page.
///
/// Errors: a cursor that is not one this server made for `kind`.
pub fn start(kind: &str, cursor: Option<&serde_json::Value>) -> Result<PageStart, String> {
    let Some(cursor) = cursor.filter(|c| !c.is_null()) else {
        return Ok(PageStart(0));
    };
    cursor
        .as_str()
        .and_then(|c| c.strip_prefix(kind))
        .and_then(|c| c.strip_prefix(':'))
        .and_then(|n| n.parse().ok())
        .map(PageStart)
        .ok_or_else(|| format!("Invalid params: unknown `cursor` {cursor} for {kind}/list"))
}

/// The cursor of the page that starts at `position` of list `kind`.
pub fn cursor(kind: &str, position: u64) -> String {
    format!("{kind}:{position}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cursors_round_trip_and_foreign_ones_are_refused() {
        let c = cursor("tools", 20);
        assert_eq!(start("tools", Some(&json!(c))), Ok(PageStart(20)));
        assert_eq!(start("tools", None), Ok(PageStart(0)));
        assert!(start("resources", Some(&json!(c))).is_err());
        assert!(start("tools", Some(&json!("tools:x"))).is_err());
        assert!(start("tools", Some(&json!(5))).is_err());
    }
}
