import Foundation

/// A calendar date in the proleptic Gregorian calendar, with arithmetic done
/// in integers (no Foundation calendars in hot paths).
public struct CivilDate: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var year: Int
    public var month: Int
    public var day: Int

    public init(year: Int, month: Int, day: Int) {
        self.year = year
        self.month = month
        self.day = day
    }

    /// Parses `YYYY-MM-DD`, rejecting impossible dates such as 2020-02-30.
    public init?(iso text: String) {
        let parts = text.split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count == 3, parts.allSatisfy({ $0.allSatisfy { $0.isASCII && $0.isNumber } }), parts[0].count == 4, parts[1].count == 2, parts[2].count == 2,
              let y = Int(parts[0]), let m = Int(parts[1]), let d = Int(parts[2]),
              (1...12).contains(m), d >= 1, d <= CivilDate.daysIn(year: y, month: m) else { return nil }
        self.init(year: y, month: m, day: d)
    }

    /// A date as a pipeline file or the command line writes it: YYYY-MM-DD
    /// from 0001-01-01, as PostgreSQL reads it (it has no year 0; the
    /// proleptic year 0 of `init(iso:)` is its 1 BC).
    public init?(written text: String) {
        guard let date = CivilDate(iso: text), date.year >= 1 else { return nil }
        self = date
    }

    /// Days since 2000-01-01 (PostgreSQL's date epoch).
    public init(pgDays: Int64) {
        // Howard Hinnant's civil_from_days, shifted from 1970 to 2000.
        let z = pgDays + 10957 + 719468
        let era = (z >= 0 ? z : z - 146096) / 146097
        let doe = z - era * 146097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        self.init(year: Int(yoe + era * 400 + (m <= 2 ? 1 : 0)), month: Int(m), day: Int(d))
    }

    /// Days since 2000-01-01.
    public var pgDays: Int64 {
        let y = Int64(month <= 2 ? year - 1 : year)
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let mp = Int64(month > 2 ? month - 3 : month + 9)
        let doy = (153 * mp + 2) / 5 + Int64(day) - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146097 + doe - 719468 - 10957
    }

    public static func isLeap(_ year: Int) -> Bool { (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 }

    public static func daysIn(year: Int, month: Int) -> Int {
        switch month {
        case 2: isLeap(year) ? 29 : 28
        case 4, 6, 9, 11: 30
        default: 31
        }
    }

    /// Adds calendar months; a day past the end of the target month clamps to
    /// its last day (Jan 31 + 1 month = Feb 29 in 2020), as PostgreSQL does.
    public func adding(months: Int) -> CivilDate {
        let total = year * 12 + (month - 1) + months
        let y = total >= 0 ? total / 12 : (total - 11) / 12
        let m = total - y * 12 + 1
        return CivilDate(year: y, month: m, day: min(day, CivilDate.daysIn(year: y, month: m)))
    }

    public var firstOfMonth: CivilDate { CivilDate(year: year, month: month, day: 1) }

    public var description: String {
        PGText.string { PGText.appendDate(self, to: &$0) }
    }

    public static func < (a: CivilDate, b: CivilDate) -> Bool { a.pgDays < b.pgDays }
}

/// Durations written in pipeline files: `250ms`, `2s`, `1.5s`, `1m`, or a number of seconds.
public enum DurationText {
    /// The longest duration a pipeline may give: a wait beyond a day is a mistake.
    public static let maxSeconds: Double = 86_400

    public static func seconds(_ text: String) -> Double? {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        let units: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600)]
        for (suffix, factor) in units where trimmed.hasSuffix(suffix) {
            guard let value = Double(trimmed.dropLast(suffix.count)), value >= 0, value.isFinite else { return nil }
            return value * factor
        }
        guard let value = Double(trimmed), value >= 0, value.isFinite else { return nil }
        return value
    }
}
