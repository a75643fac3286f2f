import Foundation

/// The keys within a tracked extract's look-back that no row had in the
/// snapshot its watermark was read in.
///
/// A row that was still uncommitted then can only have one of these keys:
/// every other key below the watermark belonged to a row the run could see.
/// So the next run reads the rows that now have one of them, by key, instead
/// of checking the transaction id of every row of the look-back. Keys from a
/// sequence leave few gaps (a rolled-back insert, a deleted row), so the
/// list stays short.
public struct KeyGaps: Sendable, Equatable, Codable {
    /// Sorted, disjoint and not adjacent.
    public private(set) var ranges: [ClosedRange<Int64>]

    /// More gaps than this are not kept: the next run then re-checks the
    /// whole look-back by transaction id, as without a gap list.
    public static let limit = 10_000
    /// Ranges up to this many keys are looked up key by key, longer ones as a range.
    static let listedKeys: Int64 = 16

    public init(_ ranges: [ClosedRange<Int64>] = []) {
        var merged: [ClosedRange<Int64>] = []
        for range in ranges.sorted(by: { $0.lowerBound < $1.lowerBound }) {
            if let last = merged.last, last.upperBound == .max || range.lowerBound <= last.upperBound + 1 {
                merged[merged.count - 1] = last.lowerBound...max(last.upperBound, range.upperBound)
            } else {
                merged.append(range)
            }
        }
        self.ranges = merged
    }

    public var isEmpty: Bool { ranges.isEmpty }

    /// The gaps within `bounds`.
    public func clamped(to bounds: ClosedRange<Int64>) -> KeyGaps {
        KeyGaps(ranges.filter { $0.overlaps(bounds) }.map { $0.clamped(to: bounds) })
    }

    /// The gaps without `keys` (which rows now have).
    public func removing(_ keys: some Sequence<Int64>) -> KeyGaps {
        let sorted = Set(keys).sorted()
        var result: [ClosedRange<Int64>] = []
        var next = 0
        for range in ranges {
            while next < sorted.count && sorted[next] < range.lowerBound { next += 1 }
            var low = range.lowerBound
            var rest = true
            while next < sorted.count && sorted[next] <= range.upperBound {
                let key = sorted[next]
                next += 1
                if low < key { result.append(low...(key - 1)) }
                // Stop before key + 1 could overflow.
                if key == range.upperBound { rest = false; break }
                low = key + 1
            }
            if rest { result.append(low...range.upperBound) }
        }
        return KeyGaps(result)
    }

    /// A predicate matching exactly the rows whose `key` (quoted SQL) is in
    /// a gap; nil when there are none. Short ranges become one list, so the
    /// planner sees one index condition per long range and one for the rest.
    public func condition(on key: String) -> String? {
        guard !ranges.isEmpty else { return nil }
        let isShort = { (range: ClosedRange<Int64>) -> Bool in
            let (width, overflow) = range.upperBound.subtractingReportingOverflow(range.lowerBound)
            return !overflow && width < Self.listedKeys
        }
        let short = ranges.filter(isShort)
        let long = ranges.filter { !isShort($0) }
        var terms = long.map { "\(key) BETWEEN \($0.lowerBound) AND \($0.upperBound)" }
        if !short.isEmpty {
            let keys = short.flatMap { Array($0) }.map(String.init).joined(separator: ",")
            terms.insert("\(key) = ANY ('{\(keys)}'::bigint[])", at: 0)
        }
        return "(" + terms.joined(separator: " OR ") + ")"
    }

    public init(from decoder: any Decoder) throws {
        let pairs = try decoder.singleValueContainer().decode([[Int64]].self)
        guard pairs.allSatisfy({ $0.count == 2 && $0[0] <= $0[1] }) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "key gaps are [low, high] pairs"))
        }
        self.init(pairs.map { $0[0]...$0[1] })
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(ranges.map { [$0.lowerBound, $0.upperBound] })
    }
}
