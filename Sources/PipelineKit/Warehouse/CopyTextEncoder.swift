import Foundation

/// Renders values in COPY's text format straight into a byte buffer: no
/// intermediate Strings for numbers, dates or timestamps.
enum CopyTextEncoder {
    static func append(_ column: Column, row: Int, to out: inout [UInt8]) {
        if column.isNull(row) {
            out.append(UInt8(ascii: "\\"))
            out.append(UInt8(ascii: "N"))
            return
        }
        switch column.field.type {
        case .smallint, .int, .bigint: appendInteger(column.ints[row], to: &out)
        case .bool: out.append(column.ints[row] != 0 ? UInt8(ascii: "t") : UInt8(ascii: "f"))
        case .date: PGText.appendDate(column.ints[row], to: &out)
        case .timestamptz: PGText.appendTimestamp(column.ints[row], to: &out)
        case .numeric(_, let scale): appendDecimal(column.ints[row], scale: scale, to: &out)
        case .double: out.append(contentsOf: "\(column.doubles[row])".utf8)
        case .text: escape(column.texts[row], into: &out)
        }
    }

    /// Convenience for tests and messages.
    static func append(_ column: Column, row: Int, to line: inout String) {
        var bytes: [UInt8] = []
        append(column, row: row, to: &bytes)
        line += String(decoding: bytes, as: UTF8.self)
    }

    static func decimal(_ value: Int64, scale: Int) -> String {
        var bytes: [UInt8] = []
        appendDecimal(value, scale: scale, to: &bytes)
        return String(decoding: bytes, as: UTF8.self)
    }

    @inline(__always)
    static func appendInteger(_ value: Int64, to out: inout [UInt8]) {
        if value < 0 { out.append(UInt8(ascii: "-")) }
        PGText.appendDigits(value.magnitude, minimumWidth: 1, to: &out)
    }

    static func appendDecimal(_ value: Int64, scale: Int, to out: inout [UInt8]) {
        guard scale > 0 else { return appendInteger(value, to: &out) }
        var divisor: UInt64 = 1
        for _ in 0..<scale { divisor *= 10 }
        if value < 0 { out.append(UInt8(ascii: "-")) }
        PGText.appendDigits(value.magnitude / divisor, minimumWidth: 1, to: &out)
        out.append(UInt8(ascii: "."))
        PGText.appendDigits(value.magnitude % divisor, minimumWidth: scale, to: &out)
    }

    /// Works on UTF-8 bytes: Swift folds "\r\n" into one Character.
    private static func escape(_ text: String, into out: inout [UInt8]) {
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "\\"): out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "\\")])
            case UInt8(ascii: "\t"): out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "t")])
            case UInt8(ascii: "\n"): out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "n")])
            case UInt8(ascii: "\r"): out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "r")])
            default: out.append(byte)
            }
        }
    }
}
