import Foundation

/// A loaded, validated pipeline: everything needed to plan and run it.
public struct PipelineDefinition: Sendable {
    public var name: String
    public var description: String
    /// The file it came from, as given.
    public var file: String
    /// SHA-256 of the file's bytes, for lineage.
    public var fileSHA256: String
    public var connections: [String: ConnectionDefinition]
    public var variables: [String: VariableValue]
    public var asOf: CivilDate
    public var concurrency: Int?
    public var warehouse: String?
    public var stages: [StageDefinition]
    /// `defaults.retry`, also used for the run lock's connection.
    public var defaultRetry: RetryPolicy = .default

    public func stage(_ id: String) -> StageDefinition? { stages.first { $0.id == id } }
}

/// A named database connection.
public struct ConnectionDefinition: Sendable {
    public var name: String
    public var info: ConnInfo
    /// Sessions refuse to write (`default_transaction_read_only`).
    public var readOnly: Bool

    public init(name: String, info: ConnInfo, readOnly: Bool) {
        self.name = name
        self.info = info
        self.readOnly = readOnly
    }
}

/// A resolved pipeline variable.
public struct VariableValue: Sendable, Hashable {
    public enum Kind: String, Sendable, CaseIterable { case string, int, number, bool, date }
    public var kind: Kind
    /// The value as text, exactly as it is substituted into `${name}`.
    public var text: String

    public init(kind: Kind, text: String) {
        self.kind = kind
        self.text = text
    }

    /// Checks `text` against the kind, returning a reason when it does not fit.
    static func problem(kind: Kind, text: String) -> String? {
        switch kind {
        case .string: return nil
        case .int:
            if Int(text) != nil { return nil }
            let digits = text.hasPrefix("-") || text.hasPrefix("+") ? text.dropFirst() : Substring(text)
            return !digits.isEmpty && digits.allSatisfy(\.isASCII) && digits.allSatisfy(\.isNumber)
                ? "is out of range (a whole number from \(Int.min) to \(Int.max))" : "is not a whole number"
        case .number: return Double(text) == nil ? "is not a number" : nil
        case .bool: return ["true", "false"].contains(text) ? nil : "is not true or false"
        case .date: return CivilDate(written: text) == nil ? "is not a valid date YYYY-MM-DD" : nil
        }
    }
}

/// One stage as written in the file, with its constructed implementation.
public struct StageDefinition: Sendable {
    public var id: String
    public var type: String
    public var inputs: [String]
    public var retry: RetryPolicy
    public var implementation: any Stage
    /// SHA-256 of the stage's resolved configuration, for lineage and change detection.
    public var configFingerprint: String
    /// SHA-256 of its type, inputs and configuration with `as_of` unresolved:
    /// what incremental refresh compares between runs.
    public var refreshFingerprint: String
    public var line: Int
    public var column: Int
}
