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
        case .date: appendDate(column.ints[row], to: &out)
        case .timestamptz: appendTimestamp(column.ints[row], to: &out)
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
        appendDigits(value.magnitude, minimumWidth: 1, to: &out)
    }

    @inline(__always)
    static func appendDigits(_ value: UInt64, minimumWidth: Int, to out: inout [UInt8]) {
        var digits: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8,
                     UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) =
            (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        var count = 0
        var rest = value
        withUnsafeMutableBytes(of: &digits) { buffer in
            repeat {
                buffer[count] = UInt8(ascii: "0") + UInt8(rest % 10)
                rest /= 10
                count += 1
            } while rest > 0
            while count < minimumWidth {
                buffer[count] = UInt8(ascii: "0")
                count += 1
            }
            for index in stride(from: count - 1, through: 0, by: -1) { out.append(buffer[index]) }
        }
    }

    static func appendDecimal(_ value: Int64, scale: Int, to out: inout [UInt8]) {
        guard scale > 0 else { return appendInteger(value, to: &out) }
        var divisor: UInt64 = 1
        for _ in 0..<scale { divisor *= 10 }
        if value < 0 { out.append(UInt8(ascii: "-")) }
        appendDigits(value.magnitude / divisor, minimumWidth: 1, to: &out)
        out.append(UInt8(ascii: "."))
        appendDigits(value.magnitude % divisor, minimumWidth: scale, to: &out)
    }

    static func appendDate(_ days: Int64, to out: inout [UInt8]) {
        if days == PGTime.infiniteDate { return out.append(contentsOf: "infinity".utf8) }
        if days == PGTime.minusInfiniteDate { return out.append(contentsOf: "-infinity".utf8) }
        let date = CivilDate(pgDays: days)
        if date.year < 0 { out.append(UInt8(ascii: "-")) }
        appendDigits(UInt64(abs(date.year)), minimumWidth: 4, to: &out)
        out.append(UInt8(ascii: "-"))
        appendDigits(UInt64(date.month), minimumWidth: 2, to: &out)
        out.append(UInt8(ascii: "-"))
        appendDigits(UInt64(date.day), minimumWidth: 2, to: &out)
    }

    /// UTC ISO text, e.g. `2020-01-31 18:30:00.000001+00`.
    static func appendTimestamp(_ micros: Int64, to out: inout [UInt8]) {
        if micros == PGTime.infinity { return out.append(contentsOf: "infinity".utf8) }
        if micros == PGTime.minusInfinity { return out.append(contentsOf: "-infinity".utf8) }
        let day = PGTime.floorDiv(micros, PGTime.microsPerDay)
        let rest = micros - day * PGTime.microsPerDay
        appendDate(day, to: &out)
        let seconds = UInt64(rest / 1_000_000), fraction = UInt64(rest % 1_000_000)
        out.append(UInt8(ascii: " "))
        appendDigits(seconds / 3600, minimumWidth: 2, to: &out)
        out.append(UInt8(ascii: ":"))
        appendDigits((seconds / 60) % 60, minimumWidth: 2, to: &out)
        out.append(UInt8(ascii: ":"))
        appendDigits(seconds % 60, minimumWidth: 2, to: &out)
        if fraction != 0 {
            out.append(UInt8(ascii: "."))
            appendDigits(fraction, minimumWidth: 6, to: &out)
        }
        out.append(contentsOf: "+00".utf8)
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
