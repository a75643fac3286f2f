import Foundation
/// The column types a pipeline can declare, with their PostgreSQL names.
public enum DataType: Sendable, Hashable, CustomStringConvertible {
    case smallint, int, bigint
    case double
    case bool
    case text
    /// Days since 2000-01-01 (PostgreSQL's epoch), stored as Int64.
    case date
    /// Microseconds since 2000-01-01 00:00 UTC, stored as Int64.
    case timestamptz
    /// A fixed-point number stored as Int64 scaled by 10^scale.
    case numeric(precision: Int, scale: Int)

    /// Parses a declared type (`bigint`, `int`, `numeric(12,2)`, ...).
    public init?(declared: String) {
        let name = declared.lowercased().replacingOccurrences(of: " ", with: "")
        switch name {
        case "smallint", "int2": self = .smallint
        case "int", "integer", "int4": self = .int
        case "bigint", "int8": self = .bigint
        case "double", "doubleprecision", "float8": self = .double
        case "bool", "boolean": self = .bool
        case "text", "varchar": self = .text
        case "date": self = .date
        case "timestamptz", "timestampwithtimezone": self = .timestamptz
        default:
            guard name.hasPrefix("numeric("), name.hasSuffix(")") else { return nil }
            let inner = name.dropFirst("numeric(".count).dropLast().split(separator: ",")
            guard inner.count == 2, let precision = Int(inner[0]), let scale = Int(inner[1]),
                  precision > 0, precision <= 18, scale >= 0, scale <= precision else { return nil }
            self = .numeric(precision: precision, scale: scale)
        }
    }

    public static let declarableNames = "smallint, int, bigint, double, bool, text, date, timestamptz, numeric(P,S) with 1 ≤ P ≤ 18 and 0 ≤ S ≤ P"

    public var description: String {
        switch self {
        case .smallint: "smallint"
        case .int: "int"
        case .bigint: "bigint"
        case .double: "double precision"
        case .bool: "bool"
        case .text: "text"
        case .date: "date"
        case .timestamptz: "timestamptz"
        case let .numeric(precision, scale): "numeric(\(precision),\(scale))"
        }
    }

    /// How values are held in memory.
    public var storage: Storage {
        switch self {
        case .double: .double
        case .text: .text
        default: .int
        }
    }

    public enum Storage: Sendable { case int, double, text }

    public var isInteger: Bool { self == .smallint || self == .int || self == .bigint }

    /// An integer or a numeric: a number held exactly, as a scaled Int64.
    public var isExactNumber: Bool {
        if case .numeric = self { return true }
        return isInteger
    }

    /// Decimal digits after the point: a numeric's scale, 0 for everything else.
    public var scale: Int {
        if case .numeric(_, let scale) = self { return scale }
        return 0
    }

    /// Whether values of this type may go into a column declared `target`:
    /// the same kind of value (integers and numerics are one kind, exact
    /// numbers) at the same scale. An integer is never a date or a time,
    /// although all three are stored as Int64; a value too large for the
    /// target is refused by the encoder, naming it.
    public func canBeWritten(as target: DataType) -> Bool {
        enum Kind { case exact, double, bool, text, date, timestamptz }
        func kind(_ type: DataType) -> Kind {
            switch type {
            case .smallint, .int, .bigint, .numeric: .exact
            case .double: .double
            case .bool: .bool
            case .text: .text
            case .date: .date
            case .timestamptz: .timestamptz
            }
        }
        return kind(self) == kind(target) && scale == target.scale
    }

    /// PostgreSQL type OIDs accepted for this declared type in a COPY result.
    public var acceptedOIDs: Set<UInt32> {
        switch self {
        case .smallint: [21]
        case .int: [23]
        case .bigint: [20]
        case .double: [701]
        case .bool: [16]
        case .text: [25, 1043, 1042, 19]
        case .date: [1082]
        case .timestamptz: [1184]
        case .numeric: [1700]
        }
    }

    /// The PostgreSQL type name of an OID, for error messages.
    public static func name(ofOID oid: UInt32) -> String {
        switch oid {
        case 16: "bool"
        case 20: "bigint"
        case 21: "smallint"
        case 23: "int"
        case 25: "text"
        case 700: "real"
        case 701: "double precision"
        case 1043: "varchar"
        case 1082: "date"
        case 1114: "timestamp (without time zone)"
        case 1184: "timestamptz"
        case 1700: "numeric"
        default: "type oid \(oid)"
        }
    }
}

/// A named, typed column of a relation.
public struct Field: Sendable, Hashable {
    public var name: String
    public var type: DataType
    public init(_ name: String, _ type: DataType) {
        self.name = name
        self.type = type
    }
}

extension DataType {
    /// A value written in a pipeline file (e.g. a lookup default) as this type;
    /// nil when the text does not fit. Dates are `YYYY-MM-DD`, timestamps ISO
    /// 8601 with an offset, numerics plain decimals with at most `scale` places.
    public func value(fromText text: String) -> Value? {
        switch self {
        case .smallint, .int, .bigint: return Int64(text).map(Value.int)
        case .bool: return ["false": Value.int(0), "true": .int(1)][text.lowercased()]
        case .double: return Double(text).map(Value.double)
        case .text: return .text(text)
        case .date:
            if text == "infinity" { return .int(PGTime.infiniteDate) }
            if text == "-infinity" { return .int(PGTime.minusInfiniteDate) }
            return CivilDate(written: text).map { .int($0.pgDays) }
        case .timestamptz:
            if text == "infinity" { return .int(PGTime.infinity) }
            if text == "-infinity" { return .int(PGTime.minusInfinity) }
            let formatter = ISO8601DateFormatter()
            formatter.formatOptions = [.withInternetDateTime]
            guard let date = formatter.date(from: text.replacingOccurrences(of: " ", with: "T")),
                  let seconds = Int64(exactly: date.timeIntervalSince1970.rounded(.down)) else { return nil }
            // Beyond PostgreSQL's timestamps (294276 AD) the microseconds would not fit.
            let (micros, overflow) = (seconds - PGTime.unixEpochOffsetSeconds).multipliedReportingOverflow(by: 1_000_000)
            return overflow || !PGTime.finiteMicros.contains(micros) ? nil : .int(micros)
        case .numeric(let precision, let scale):
            let negative = text.hasPrefix("-")
            let digits = negative ? text.dropFirst() : Substring(text)
            let parts = digits.split(separator: ".", omittingEmptySubsequences: false)
            guard (1...2).contains(parts.count), !parts[0].isEmpty, parts.allSatisfy({ $0.allSatisfy(\.isASCII) && $0.allSatisfy(\.isNumber) }),
                  parts.count == 1 || (!parts[1].isEmpty && parts[1].count <= scale),
                  parts[0].count <= precision - scale else { return nil }
            let fraction = parts.count == 2 ? String(parts[1]) : ""
            guard let scaled = Int64(String(parts[0]) + fraction + String(repeating: "0", count: scale - fraction.count)) else { return nil }
            return .int(negative ? -scaled : scaled)
        }
    }
}
