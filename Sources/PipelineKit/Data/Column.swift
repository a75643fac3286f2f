import Foundation
/// One column of a batch: a typed array plus a null mask.
///
/// Only the array matching `field.type.storage` is used; the others stay empty.
/// Keeping plain arrays (instead of an array of enum values) lets stages read
/// a column in a tight loop without boxing.
public struct Column: Sendable {
    public private(set) var field: Field
    public var ints: [Int64] = []
    public var doubles: [Double] = []
    public var texts: [String] = []
    /// `nulls[i]` is true when row i is NULL; empty when the column has no NULLs.
    public var nulls: [Bool] = []

    public init(_ field: Field, capacity: Int = 0) {
        self.field = field
        switch field.type.storage {
        case .int: ints.reserveCapacity(capacity)
        case .double: doubles.reserveCapacity(capacity)
        case .text: texts.reserveCapacity(capacity)
        }
    }

    /// The same values under another name or type of the same storage.
    mutating func relabel(_ field: Field) {
        precondition(field.type.storage == self.field.type.storage, "relabelling changes the storage")
        self.field = field
    }

    public var count: Int {
        switch field.type.storage {
        case .int: ints.count
        case .double: doubles.count
        case .text: texts.count
        }
    }

    @inline(__always)
    public func isNull(_ row: Int) -> Bool { !nulls.isEmpty && nulls[row] }

    @inline(__always)
    mutating func markNull(_ isNull: Bool) {
        if isNull {
            if nulls.isEmpty { nulls = [Bool](repeating: false, count: count) }
            nulls.append(true)
        } else if !nulls.isEmpty {
            nulls.append(false)
        }
    }

    public mutating func append(int value: Int64?) {
        markNull(value == nil)
        ints.append(value ?? 0)
    }

    public mutating func append(double value: Double?) {
        markNull(value == nil)
        doubles.append(value ?? 0)
    }

    public mutating func append(text value: String?) {
        markNull(value == nil)
        texts.append(value ?? "")
    }

    public mutating func append(_ value: Value) {
        switch (field.type.storage, value) {
        case (.int, .int(let v)): append(int: v)
        case (.double, .double(let v)): append(double: v)
        case (.double, .int(let v)): append(double: Double(v))
        case (.text, .text(let v)): append(text: v)
        case (.int, _): append(int: nil)
        case (.double, _): append(double: nil)
        case (.text, _): append(text: nil)
        }
    }

    public func value(at row: Int) -> Value {
        if isNull(row) { return .null }
        switch field.type.storage {
        case .int: return .int(ints[row])
        case .double: return .double(doubles[row])
        case .text: return .text(texts[row])
        }
    }
}

/// A single value, for small data: lookup rows, defaults, keys.
public enum Value: Sendable, Hashable, CustomStringConvertible {
    case null
    case int(Int64)
    case double(Double)
    case text(String)

    public var isNull: Bool { self == .null }

    public var intValue: Int64? {
        if case .int(let v) = self { return v }
        return nil
    }

    public var textValue: String? {
        if case .text(let v) = self { return v }
        return nil
    }

    public var description: String {
        switch self {
        case .null: "NULL"
        case .int(let v): String(v)
        case .double(let v): String(v)
        case .text(let v): v
        }
    }
}

extension Value {
    /// Equal as PostgreSQL compares text for equality: byte for byte. Swift's
    /// String equality would also join canonically equivalent spellings
    /// ("é" as one code point or as "e" and an accent), which SQL keeps apart.
    public static func == (lhs: Value, rhs: Value) -> Bool {
        switch (lhs, rhs) {
        case (.null, .null): true
        case let (.int(a), .int(b)): a == b
        case let (.double(a), .double(b)): a == b
        case let (.text(a), .text(b)): a.utf8.elementsEqual(b.utf8)
        default: false
        }
    }

    public func hash(into hasher: inout Hasher) {
        switch self {
        case .null: hasher.combine(0 as UInt8)
        case .int(let v): hasher.combine(1 as UInt8); hasher.combine(v)
        case .double(let v): hasher.combine(2 as UInt8); hasher.combine(v)
        case .text(let v):
            hasher.combine(3 as UInt8)
            hasher.combine(v.utf8.count)
            let hashed: Void? = v.utf8.withContiguousStorageIfAvailable { hasher.combine(bytes: UnsafeRawBufferPointer($0)) }
            if hashed == nil { for byte in v.utf8 { hasher.combine(byte) } }
        }
    }

    /// An order for choosing between rows (first/last, tie breaks): values of
    /// one kind in their natural order, text by bytes (PostgreSQL's "C"
    /// collation, consistent with `==`), NULL last.
    public static func sortsBefore(_ a: Value, _ b: Value) -> Bool {
        switch (a, b) {
        case let (.int(x), .int(y)): x < y
        case let (.double(x), .double(y)): x < y
        case let (.text(x), .text(y)): x.utf8.lexicographicallyPrecedes(y.utf8)
        case (.null, _): false
        case (_, .null): true
        default: a.description < b.description
        }
    }
}
