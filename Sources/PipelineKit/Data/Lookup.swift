import Foundation
/// A keyed table held in memory, offered by `lookupBuild` to later stages.
public struct Lookup: Sendable {
    public let rows: Batch
    public let keyColumns: [String]
    public let normalization: KeyNormalization
    /// Normalised key → row positions (several when duplicates are kept).
    private let index: [[Value]: [Int]]
    /// For a single integer key: key → first position. Hashing an integer
    /// instead of an array of values makes a per-group lookup several times cheaper.
    private let firstByInt: [Int64: Int]?
    /// Returned for keys that match nothing, when declared.
    public let defaultRow: [Value]?
    /// In an incremental run, the normalised keys whose rows are new since
    /// the last run; nil when unknown (a full refresh, or an input whose
    /// changes cannot be told), which consumers must treat as "anything changed".
    public var changedKeys: Set<[Value]>? = nil

    public init(rows: Batch, keyColumns: [String], normalization: KeyNormalization,
                index: [[Value]: [Int]], defaultRow: [Value]?) {
        self.rows = rows
        self.keyColumns = keyColumns
        self.normalization = normalization
        self.index = index
        self.defaultRow = defaultRow
        var firstByInt: [Int64: Int]? = [:]
        if keyColumns.count == 1 {
            firstByInt!.reserveCapacity(index.count)
            for (key, positions) in index {
                guard case .int(let value) = key[0], let first = positions.first else { firstByInt = nil; break }
                firstByInt![value] = first
            }
        } else {
            firstByInt = nil
        }
        self.firstByInt = firstByInt
    }

    /// Whether `firstPosition(forInt:)` answers for this lookup (a single integer key).
    public var isKeyedByInt: Bool { firstByInt != nil }

    /// The first row of an integer key, as `positions(forRaw: [.int(key)]).first` (integers need no normalising).
    public func firstPosition(forInt key: Int64) -> Int? { firstByInt?[key] }

    public var schema: [Field] { rows.schema }

    /// Whether rows for this raw key may have changed since the last run.
    public func mayHaveChanged(forRaw key: [Value]) -> Bool {
        guard let changedKeys else { return true }
        guard let normalised = normalization.apply(key) else { return false }
        return changedKeys.contains(normalised)
    }

    /// Row positions matching a raw (not yet normalised) key.
    public func positions(forRaw key: [Value]) -> [Int] {
        guard let normalised = normalization.apply(key) else { return [] }
        return index[normalised] ?? []
    }

    /// The values of `column` for the first match of a raw key, or the default row's.
    public func value(_ column: Int, forRaw key: [Value]) -> Value {
        if let first = positions(forRaw: key).first { return rows.columns[column].value(at: first) }
        return defaultRow?[column] ?? .null
    }
}

/// Normalisations applied to key values before they are compared, e.g. so
/// that '+91 80 4710 0037' and '08047100037' are one phone number.
public struct KeyNormalization: Sendable {
    public enum Step: Sendable, Equatable {
        case digits, trim, lower, upper
        case last(Int), first(Int)
    }

    public let steps: [Step]

    public init(steps: [Step]) { self.steps = steps }

    public static let none = KeyNormalization(steps: [])

    public static let documentation = "digits, trim, lower, upper, last:N, first:N"

    public static func parse(_ word: String) -> Step? {
        switch word {
        case "digits": return .digits
        case "trim": return .trim
        case "lower": return .lower
        case "upper": return .upper
        default:
            let parts = word.split(separator: ":")
            guard parts.count == 2, let n = Int(parts[1]), n > 0 else { return nil }
            switch parts[0] {
            case "last": return .last(n)
            case "first": return .first(n)
            default: return nil
            }
        }
    }

    /// The normalised key; nil when any part is NULL or normalises to nothing,
    /// since such a key can never match.
    public func apply(_ key: [Value]) -> [Value]? {
        var result = key
        for index in result.indices {
            switch result[index] {
            case .null: return nil
            case .text(let text) where !steps.isEmpty:
                let normalised = normalise(text)
                if normalised.isEmpty { return nil }
                result[index] = .text(normalised)
            default: continue
            }
        }
        return result
    }

    private func normalise(_ text: String) -> String {
        var value = text
        for step in steps {
            switch step {
            case .digits: value = String(value.unicodeScalars.filter { $0.properties.numericType == .decimal && $0.isASCII }.map(Character.init))
            case .trim: value = value.trimmingCharacters(in: .whitespacesAndNewlines)
            case .lower: value = value.lowercased()
            case .upper: value = value.uppercased()
            case .last(let n): value = String(value.suffix(n))
            case .first(let n): value = String(value.prefix(n))
            }
        }
        return value
    }
}
