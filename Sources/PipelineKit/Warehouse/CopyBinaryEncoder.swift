import Foundation

/// Renders rows in COPY's binary format for `COPY ... FROM STDIN (FORMAT binary)`.
///
/// The server parses binary values about three times faster than text (no
/// date, timestamp or numeric parsing), which is most of a warehouse write.
/// Binary values carry no type check of their own, so every value is checked
/// against its column's range here and a misfit fails with the column named,
/// where text input would have failed on the server.
struct CopyBinaryEncoder {
    let columns: [Column]
    /// The types of the table's columns, which binary input must match exactly.
    let types: [DataType]
    private(set) var bytes: [UInt8] = []

    /// The signature, then no flags and no header extension.
    static let header: [UInt8] = BinaryCopyDecoder.signature + [0, 0, 0, 0] + [0, 0, 0, 0]
    static let trailer: [UInt8] = [0xFF, 0xFF]

    /// Values, in binary form, of further columns that are the same in every row.
    let constants: [[UInt8]]

    /// `columns` hold the values for table columns of `types`; each must be
    /// stored the same way (an integer column for an integer type, and so on).
    init(columns: [Column], types: [DataType], constants: [[UInt8]] = []) throws {
        for (column, type) in zip(columns, types) where column.field.type.storage != type.storage {
            throw StageFailure.config("column '\(column.field.name)' holds \(column.field.type) values, which cannot be written to a \(type) column")
        }
        self.columns = columns
        self.types = types
        self.constants = constants
        bytes.reserveCapacity(1 << 17)
    }

    mutating func takeBytes() -> [UInt8] {
        defer { bytes.removeAll(keepingCapacity: true) }
        return bytes
    }

    mutating func append(row: Int) throws {
        append(UInt16(columns.count + constants.count))
        // Indexing instead of iterating: a loop variable would copy (retain
        // and release) each column's arrays for every value.
        for index in columns.indices {
            let type = types[index]
            if columns[index].isNull(row) {
                append(UInt32(bitPattern: -1))
                continue
            }
            switch type {
            case .smallint:
                append(UInt32(2))
                append(UInt16(bitPattern: try Self.narrow(columns[index].ints[row], Int16.self, columns[index].field.name, type)))
            case .int, .date:
                append(UInt32(4))
                append(UInt32(bitPattern: try Self.narrow(columns[index].ints[row], Int32.self, columns[index].field.name, type)))
            case .bigint, .timestamptz:
                append(UInt32(8))
                append(UInt64(bitPattern: columns[index].ints[row]))
            case .bool:
                append(UInt32(1))
                bytes.append(columns[index].ints[row] != 0 ? 1 : 0)
            case .double:
                append(UInt32(8))
                append(columns[index].doubles[row].bitPattern)
            case .text:
                let utf8 = columns[index].texts[row].utf8
                append(UInt32(utf8.count))
                bytes.append(contentsOf: utf8)
            case let .numeric(precision, scale):
                let value = columns[index].ints[row]
                // The server would refuse it too, but without saying which column or what to change.
                if value.magnitude >= Int64.pow10(precision).magnitude {
                    throw StageFailure.data("value \(Self.decimal(value, scale: scale)) is out of range for column '\(columns[index].field.name)' (\(type): at most \(precision - scale) digits before the point); declare a larger precision for it (at most 18)")
                }
                appendNumeric(value, scale: scale)
            }
        }
        for value in constants {
            append(UInt32(value.count))
            bytes.append(contentsOf: value)
        }
    }

    /// A uuid's binary form: its 16 bytes.
    static func uuid(_ value: UUID) -> [UInt8] {
        withUnsafeBytes(of: value.uuid) { Array($0) }
    }

    /// A timestamptz's binary form: microseconds since 2000-01-01 UTC, big-endian.
    static func timestamptz(_ micros: Int64) -> [UInt8] {
        withUnsafeBytes(of: micros.bigEndian) { Array($0) }
    }

    /// A scaled integer as a decimal number, e.g. 12345 at scale 2 as 123.45.
    static func decimal(_ value: Int64, scale: Int) -> String {
        let digits = String(value.magnitude)
        let padded = String(repeating: "0", count: max(0, scale + 1 - digits.count)) + digits
        let point = padded.index(padded.endIndex, offsetBy: -scale)
        return (value < 0 ? "-" : "") + padded[..<point] + (scale > 0 ? "." + padded[point...] : "")
    }

    private static func narrow<T: FixedWidthInteger>(_ value: Int64, _: T.Type, _ column: @autoclosure () -> String,
                                                     _ type: DataType) throws -> T {
        guard let narrowed = T(exactly: value) else {
            throw StageFailure.data("value \(value) is out of range for column '\(column())' (\(type))")
        }
        return narrowed
    }

    @inline(__always) private mutating func append(_ value: UInt16) {
        bytes.append(UInt8(truncatingIfNeeded: value >> 8))
        bytes.append(UInt8(truncatingIfNeeded: value))
    }

    @inline(__always) private mutating func append(_ value: UInt32) {
        withUnsafeBytes(of: value.bigEndian) { bytes.append(contentsOf: $0) }
    }

    @inline(__always) private mutating func append(_ value: UInt64) {
        withUnsafeBytes(of: value.bigEndian) { bytes.append(contentsOf: $0) }
    }

    /// PostgreSQL's numeric wire form: base-10000 digits around the decimal
    /// point, a weight (the first digit's power of 10000), a sign and the
    /// display scale. `value` is the number times 10^scale.
    private mutating func appendNumeric(_ value: Int64, scale: Int) {
        let magnitude = value.magnitude
        let unit = Int64.pow10(scale).magnitude
        let fractionGroups = (scale + 3) / 4
        // At most 5 integer and 5 fraction groups for a 64-bit value, scale <= 18.
        withUnsafeTemporaryAllocation(of: UInt16.self, capacity: 12) { digits in
            var integerGroups = 0
            var rest = magnitude / unit
            while rest > 0 {  // least significant first, reversed below
                digits[integerGroups] = UInt16(rest % 10_000)
                rest /= 10_000
                integerGroups += 1
            }
            var low = 0, high = integerGroups - 1
            while low < high {
                digits.swapAt(low, high)
                low += 1
                high -= 1
            }
            // The fraction padded to whole groups of four decimals.
            var padded = UInt128(magnitude % unit) * UInt128(Int64.pow10(fractionGroups * 4 - scale))
            for index in stride(from: integerGroups + fractionGroups - 1, through: integerGroups, by: -1) {
                digits[index] = UInt16(padded % 10_000)
                padded /= 10_000
            }
            var first = 0, end = integerGroups + fractionGroups
            while first < end && digits[first] == 0 { first += 1 }
            while end > first && digits[end - 1] == 0 { end -= 1 }
            let count = end - first
            let weight = count == 0 ? 0 : integerGroups - 1 - first
            append(UInt32(8 + 2 * count))
            append(UInt16(count))
            append(UInt16(bitPattern: Int16(weight)))
            append(UInt16(value < 0 && count > 0 ? 0x4000 : 0))
            append(UInt16(scale))
            for index in first..<end { append(digits[index]) }
        }
    }
}
