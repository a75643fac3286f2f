import Foundation
/// A keyed table held in memory, offered by `lookupBuild` to later stages.
public struct Lookup: Sendable {
    public let rows: Batch
    public let keyColumns: [String]
    public let normalization: KeyNormalization
    /// Where the rows of each key are.
    private let index: Index
    /// Returned for keys that match nothing, when declared.
    public let defaultRow: [Value]?
    /// In an incremental run, the normalised keys whose rows are new since
    /// the last run; nil when unknown (a full refresh, or an input whose
    /// changes cannot be told), which consumers must treat as "anything changed".
    public var changedKeys: Set<[Value]>? = nil

    /// Row positions by key. A single integer key is hashed as an integer,
    /// not as an array of values: several times cheaper to build and to ask.
    public enum Index: Sendable {
        /// Normalised key → row positions (several when duplicates are kept).
        case values([[Value]: [Int]])
        /// Integer key → its first row, and the further rows of keys that have several.
        case ints(first: [Int64: Int], more: [Int64: [Int]])
    }

    public init(rows: Batch, keyColumns: [String], normalization: KeyNormalization, index: Index, defaultRow: [Value]?) {
        self.rows = rows
        self.keyColumns = keyColumns
        self.normalization = normalization
        self.defaultRow = defaultRow
        // A value index whose keys are all single integers is kept as an integer one.
        if case .values(let byValues) = index, keyColumns.count == 1,
           byValues.keys.allSatisfy({ if case .int = $0[0] { true } else { false } }) {
            var first: [Int64: Int] = [:], more: [Int64: [Int]] = [:]
            first.reserveCapacity(byValues.count)
            for (key, positions) in byValues {
                guard case .int(let value) = key[0], let head = positions.first else { continue }
                first[value] = head
                if positions.count > 1 { more[value] = Array(positions.dropFirst()) }
            }
            self.index = .ints(first: first, more: more)
        } else {
            self.index = index
        }
    }

    public init(rows: Batch, keyColumns: [String], normalization: KeyNormalization,
                index: [[Value]: [Int]], defaultRow: [Value]?) {
        self.init(rows: rows, keyColumns: keyColumns, normalization: normalization, index: .values(index), defaultRow: defaultRow)
    }

    /// Whether `firstPosition(forInt:)` answers for this lookup (a single integer key).
    public var isKeyedByInt: Bool {
        if case .ints = index { return true }
        return false
    }

    /// The first row of an integer key, as `positions(forRaw: [.int(key)]).first` (integers need no normalising).
    public func firstPosition(forInt key: Int64) -> Int? {
        guard case .ints(let first, _) = index else { return nil }
        return first[key]
    }

    public var schema: [Field] { rows.schema }

    public var changes: LookupChanges { LookupChanges(changedKeys: changedKeys, normalization: normalization) }

    /// Row positions matching a raw (not yet normalised) key.
    public func positions(forRaw key: [Value]) -> [Int] {
        guard let normalised = normalization.apply(key) else { return [] }
        switch index {
        case .values(let byValues):
            return byValues[normalised] ?? []
        case let .ints(first, more):
            guard normalised.count == 1, case .int(let value) = normalised[0], let head = first[value] else { return [] }
            return [head] + (more[value] ?? [])
        }
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
