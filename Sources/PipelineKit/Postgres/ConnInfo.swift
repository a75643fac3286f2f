import Foundation
import CLibPQ

/// A libpq connection string (key=value conninfo or postgres:// URI), parsed
/// by libpq itself so that it means exactly what it means to psql.
public struct ConnInfo: Sendable, Equatable {
    /// The string as written after environment interpolation. May hold a password.
    public let raw: String

    public init(_ raw: String) { self.raw = raw }

    /// Parses with `PQconninfoParse`; on failure, libpq's complaint with
    /// every quoted part hidden.
    public func parsed() throws -> [String: String] {
        var errmsg: UnsafeMutablePointer<CChar>?
        guard let options = PQconninfoParse(raw, &errmsg) else {
            let message = errmsg.map { String(cString: $0) } ?? "invalid connection string"
            if let errmsg { PQfreemem(errmsg) }
            // A string that does not parse cannot work on a retry either.
            throw PGError(kind: .refused, message: "invalid connection string: "
                + Self.safeComplaint(message.trimmingCharacters(in: .whitespacesAndNewlines)))
        }
        defer { PQconninfoFree(options) }
        var result: [String: String] = [:]
        var cursor = options
        while let keyword = cursor.pointee.keyword {
            if let value = cursor.pointee.val {
                result[String(cString: keyword)] = String(cString: value)
            }
            cursor += 1
        }
        return result
    }

    /// libpq's complaint about a string it cannot parse, with what could be
    /// a secret hidden: its two common complaints keep what helps to fix
    /// them (the missing `=`, an unknown option's name, which is a keyword
    /// and never a value); any other has its quoted part hidden.
    static func safeComplaint(_ message: String) -> String {
        let missingEquals = (prefix: "missing \"=\" after \"", suffix: "\" in connection info string")
        if message.hasPrefix(missingEquals.prefix), message.hasSuffix(missingEquals.suffix) {
            // The word before which "=" is missing may be a password's second half ("password=a b").
            return "missing \"=\" after \"…\" in connection info string; write key=value pairs, and quote a value holding spaces in single quotes (password='a b')"
        }
        let unknownOption = "invalid connection option \""
        if message.hasPrefix(unknownOption), message.hasSuffix("\""),
           case let name = message.dropFirst(unknownOption.count).dropLast(),
           !name.isEmpty, name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }) {
            return "invalid connection option \"\(name)\"; libpq's options are lower case, such as host, port, dbname, user, sslmode"
        }
        return hidingQuotes(message)
    }

    /// libpq quotes the offending part of a string it cannot parse: the
    /// whole URI, or a token that may be the password itself
    /// (`invalid percent-encoded token: "p%zz..."`). A quoted part can hold
    /// quotes of its own, so everything from the first quote to the last is hidden.
    static func hidingQuotes(_ message: String) -> String {
        guard let first = message.firstIndex(of: "\""), let last = message.lastIndex(of: "\"") else { return message }
        // A lone quote hides everything after it.
        let rest = last > first ? message[message.index(after: last)...] : ""
        return message[..<first] + "\"…\"" + rest
    }

    /// The target as `key=value` pairs without the password, for messages
    /// and lineage. Falls back to a fixed text when the string does not parse,
    /// because the raw string could contain a password.
    public var redacted: String {
        guard let options = try? parsed() else { return "<unparseable connection string>" }
        return Self.redacted(options)
    }

    /// Parsed options as `key=value` pairs without password and sslpassword
    /// (the client key's passphrase).
    static func redacted(_ options: [String: String]) -> String {
        options.filter { !$0.key.contains("password") }
            .sorted { $0.key < $1.key }
            .map { "\($0.key)=\($0.value)" }
            .joined(separator: " ")
    }
}
