import Foundation
/// Helpers that keep names from YAML out of harm's way in SQL text.
public enum SQL {
    /// Quotes an identifier the way PostgreSQL's `quote_ident` does, so a
    /// name such as `x"; DROP TABLE users; --` is only ever a strange name.
    /// Names from a JSON array of them, as `json_agg(attname)` returns them
    /// (NULL: none): unlike a joined list, any name comes back whole.
    public static func names(fromJSON json: String?) -> [String] {
        guard let json else { return [] }
        return (try? JSONDecoder().decode([String].self, from: Data(json.utf8))) ?? []
    }

    public static func ident(_ name: String) -> String {
        "\"" + name.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }

    /// A string constant, quoted the way `quote_literal` does (standard_conforming_strings on).
    public static func literal(_ text: String) -> String {
        "'" + text.replacingOccurrences(of: "'", with: "''") + "'"
    }

    /// `schema.table` with both parts quoted; `name` may be `table` or `schema.table`.
    public static func qualified(_ name: String) -> String {
        let parts = splitQualified(name)
        return parts.schema.map { ident($0) + "." + ident(parts.table) } ?? ident(parts.table)
    }

    public static func splitQualified(_ name: String) -> (schema: String?, table: String) {
        guard let dot = name.firstIndex(of: ".") else { return (nil, name) }
        return (String(name[..<dot]), String(name[name.index(after: dot)...]))
    }
}
