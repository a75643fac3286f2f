/// PostgreSQL's text forms of dates and timestamps, written straight into a
/// byte buffer: one implementation for COPY data, messages and tests.
enum PGText {
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

    static func appendDate(_ days: Int64, to out: inout [UInt8]) {
        if days == PGTime.infiniteDate { return out.append(contentsOf: "infinity".utf8) }
        if days == PGTime.minusInfiniteDate { return out.append(contentsOf: "-infinity".utf8) }
        appendDate(CivilDate(pgDays: days), to: &out)
    }

    static func appendDate(_ date: CivilDate, to out: inout [UInt8]) {
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

    static func string(_ write: (inout [UInt8]) -> Void) -> String {
        var bytes: [UInt8] = []
        write(&bytes)
        return String(decoding: bytes, as: UTF8.self)
    }
}
