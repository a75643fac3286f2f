import Foundation
import CLibPQ

/// An error reported by PostgreSQL or by libpq, with the server's own fields.
///
/// Messages never contain a password: connection targets are rendered with
/// `ConnInfo.redacted`.
public struct PGError: Error, CustomStringConvertible, Sendable {
    public enum Kind: Sendable, Equatable {
        /// The server rejected a statement (see `sqlState`).
        case server
        /// The connection could not be opened or was lost.
        case connection
        /// The login was refused, or the connection string cannot work:
        /// retrying the same login cannot succeed.
        case refused
        /// The client side of a COPY or a result did not match expectations.
        case protocolViolation
    }

    public var kind: Kind
    public var sqlState: String?
    public var message: String
    public var detail: String?
    public var hint: String?
    /// Where in the statement it happened (e.g. "COPY t, line 12, column minutes").
    public var context: String?
    /// The redacted connection target, when known.
    public var target: String?

    public init(kind: Kind, sqlState: String? = nil, message: String,
                detail: String? = nil, hint: String? = nil, target: String? = nil) {
        self.kind = kind
        self.sqlState = sqlState
        self.message = message
        self.detail = detail
        self.hint = hint
        self.target = target
    }

    /// Failures that a retry can cure: lost connections, serialization
    /// failures, deadlocks, resource exhaustion and administrator shutdowns.
    public var isTransient: Bool {
        if kind == .connection { return true }
        guard let state = sqlState else { return false }
        if state.hasPrefix("08") || state.hasPrefix("53") { return true }
        return ["40001", "40P01", "57P01", "57P02", "57P03"].contains(state)
    }

    /// Whether a failed connection attempt was a refusal rather than an
    /// outage. The server sends no SQLSTATE that libpq would expose at
    /// connection time, so its messages (and libpq's own) are matched; an
    /// unknown one counts as an outage and is retried.
    public static func isRefusal(_ message: String) -> Bool {
        [
            "password authentication failed", "no password supplied", "authentication failed for user",
            "no pg_hba.conf entry", "pg_hba.conf rejects", "does not exist", "permission denied for database",
            "server does not support SSL, but SSL was required", "invalid sslmode value", "invalid port number",
            "invalid integer value",
        ].contains { message.contains($0) }
    }

    public var description: String {
        var text = message
        if let state = sqlState { text = "\(text) (SQLSTATE \(state))" }
        if let target { text += " [\(target)]" }
        if let detail, !detail.isEmpty { text += "\n  detail: \(detail)" }
        if let context, !context.isEmpty { text += "\n  context: \(context)" }
        if let hint, !hint.isEmpty { text += "\n  hint: \(hint)" }
        return text
    }

    init(result: OpaquePointer?, connection: OpaquePointer?, target: String?) {
        func field(_ code: Int32) -> String? {
            guard let result, let raw = PQresultErrorField(result, code) else { return nil }
            return String(cString: raw)
        }
        let primary = field(Int32(UInt8(ascii: "M")))
        let connMessage = connection.flatMap { PQerrorMessage($0) }.map { String(cString: $0) }
        let lost = connection.map { PQstatus($0) == CONNECTION_BAD } ?? true
        let state = field(Int32(UInt8(ascii: "C")))
        self.init(
            kind: state == nil && lost ? .connection : .server,
            sqlState: state,
            message: (primary ?? connMessage ?? "unknown PostgreSQL error")
                .trimmingCharacters(in: .whitespacesAndNewlines),
            detail: field(Int32(UInt8(ascii: "D"))),
            hint: field(Int32(UInt8(ascii: "H"))),
            target: target
        )
        context = field(Int32(UInt8(ascii: "W")))
    }
}
