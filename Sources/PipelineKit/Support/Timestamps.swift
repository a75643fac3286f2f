import Foundation

/// PostgreSQL timestamptz values are microseconds since 2000-01-01 00:00 UTC.
public enum PGTime {
    public static let unixEpochOffsetSeconds: Int64 = 946_684_800
    public static let microsPerDay: Int64 = 86_400_000_000
    /// PostgreSQL's 'infinity' and '-infinity' timestamps and dates.
    public static let infinity = Int64.max, minusInfinity = Int64.min
    public static let infiniteDate = Int64(Int32.max), minusInfiniteDate = Int64(Int32.min)
    /// The finite dates PostgreSQL stores, in days since 2000-01-01: 4714-11-24 BC to 5874897-12-31.
    public static let finiteDays: ClosedRange<Int64> = -2_451_545...2_145_031_948
    /// The finite timestamps PostgreSQL stores, in µs since 2000-01-01 UTC: 4714-11-24 BC up to 294277-01-01.
    public static let finiteMicros: Range<Int64> = -211_813_488_000_000_000..<9_223_371_331_200_000_000

    public static func isInfinite(micros: Int64) -> Bool { micros == infinity || micros == minusInfinity }

    /// ISO text in UTC, as COPY text format accepts it (`2020-01-31 18:30:00.000001+00`).
    public static func format(micros: Int64) -> String {
        PGText.string { PGText.appendTimestamp(micros, to: &$0) }
    }

    public static func date(micros: Int64) -> Date {
        Date(timeIntervalSince1970: Double(floorDiv(micros, 1_000_000) + unixEpochOffsetSeconds))
    }

    @inline(__always)
    public static func floorDiv(_ a: Int64, _ b: Int64) -> Int64 {
        let q = a / b
        return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q
    }
}

/// Maps instants to local calendar days in one time zone.
///
/// Offsets are looked up once per quarter hour of UTC time and kept in a
/// flat table, so a call costs two divisions by constants and an array read;
/// a per-row Foundation calendar call would dominate an aggregation over
/// millions of rows. Most transitions fall on a quarter hour, but not all
/// (St. John's changed clocks at 00:01 local for years, and local mean times
/// have offsets in seconds): a quarter hour with a transition inside it is
/// marked, and its instants are asked of Foundation one by one.
public struct LocalDayMapper {
    private let zone: TimeZone
    private var offsets: [Int64] = []
    private var firstBucket: Int64 = 0
    private static let bucketMicros: Int64 = 15 * 60 * 1_000_000
    private static let unknown = Int64.min
    /// The offset changes within this quarter hour.
    private static let mixed = Int64.min + 1
    /// The table covers about 40 years of quarter hours at most; beyond, Foundation is asked directly.
    private static let maxBuckets = 40 * 366 * 96

    public init(zone: TimeZone) { self.zone = zone }

    /// Local date (days since 2000-01-01) of an instant (µs since 2000-01-01 UTC).
    @inline(__always)
    public mutating func localDay(micros: Int64) -> Int64 {
        // Infinite instants stay beyond every finite day.
        if micros == PGTime.infinity { return .max }
        if micros == PGTime.minusInfinity { return .min }
        var bucket = micros / Self.bucketMicros
        if micros % Self.bucketMicros < 0 { bucket -= 1 }
        var offset = offset(bucket: bucket)
        if offset == Self.mixed { offset = exactOffset(micros: micros) }
        let local = micros + offset
        var day = local / PGTime.microsPerDay
        if local % PGTime.microsPerDay < 0 { day -= 1 }
        return day
    }

    @inline(__always)
    private mutating func offset(bucket: Int64) -> Int64 {
        let index = bucket - firstBucket
        if index >= 0 && index < Int64(offsets.count) {
            let known = offsets[Int(index)]
            if known != Self.unknown { return known }
        }
        return slowOffset(bucket: bucket)
    }

    private func exactOffset(micros: Int64) -> Int64 {
        Int64(zone.secondsFromGMT(for: PGTime.date(micros: micros))) * 1_000_000
    }

    private mutating func slowOffset(bucket: Int64) -> Int64 {
        let start = exactOffset(micros: bucket * Self.bucketMicros)
        let value = start == exactOffset(micros: (bucket + 1) * Self.bucketMicros - 1) ? start : Self.mixed
        if offsets.isEmpty {
            firstBucket = bucket - 366 * 96
            offsets = [Int64](repeating: Self.unknown, count: 2 * 366 * 96)
        }
        var index = bucket - firstBucket
        if index < 0 && Int64(offsets.count) - index <= Int64(Self.maxBuckets) {
            let grow = Int(max(-index, Int64(offsets.count)))
            offsets.insert(contentsOf: repeatElement(Self.unknown, count: grow), at: 0)
            firstBucket -= Int64(grow)
            index = bucket - firstBucket
        } else if index >= Int64(offsets.count) && index < Int64(Self.maxBuckets) {
            offsets.append(contentsOf: repeatElement(Self.unknown, count: Int(max(index + 1 - Int64(offsets.count), Int64(offsets.count)))))
        }
        if index >= 0 && index < Int64(offsets.count) { offsets[Int(index)] = value }
        return value
    }
}
