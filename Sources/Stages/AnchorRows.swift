import PipelineKit

/// The anchor row of each group of a `windowAggregate`: its earliest row,
/// ties going to the lowest `tie_break` value and then to the row read first.
///
/// An incremental run builds every group's schedule to find the windows that
/// closed, and choosing the anchor rows is most of that work: an open-addressing
/// table keyed by the group (no hashing of a struct, no per-entry allocation),
/// and a sort of the groups only when the caller needs them in key order.
struct AnchorRows {
    /// Each group's key; ascending when asked for in key order.
    private(set) var keys: [GroupKey] = []
    /// Each group's anchor row.
    private(set) var rows: [Int] = []
    private(set) var nullKeys = 0
    private(set) var nullTimes = 0
    private(set) var infiniteTimes = 0

    private struct Slot {
        var a: Int64 = 0
        var b: Int64 = 0
        var row = -1
    }

    /// The anchor rows of the groups of `count` rows, or only of those whose key is in `only`.
    init(keyColumns: [Column], times: Column, tieBreak: Column?, count: Int, only: Set<GroupKey>?, inKeyOrder: Bool) {
        var capacity = 16
        while capacity < (only?.count ?? count) * 2 { capacity <<= 1 }
        let mask = capacity - 1
        var slots = [Slot](repeating: Slot(), count: capacity)
        let precedes = Self.tieOrder(tieBreak)
        let twoKeys = keyColumns.count > 1
        let instants = times.ints
        var groups = 0
        for row in 0..<count {
            if keyColumns.contains(where: { $0.isNull(row) }) { nullKeys += 1; continue }
            if times.isNull(row) { nullTimes += 1; continue }
            // An infinite start has no calendar date to count windows from.
            let time = instants[row]
            if PGTime.isInfinite(micros: time) { infiniteTimes += 1; continue }
            let (a, b) = (keyColumns[0].ints[row], twoKeys ? keyColumns[1].ints[row] : 0)
            if let only, !only.contains(GroupKey(a: a, b: b)) { continue }
            var index = GroupIndex.hash(a, b) & mask
            while slots[index].row >= 0 && (slots[index].a != a || slots[index].b != b) { index = (index + 1) & mask }
            let best = slots[index].row
            if best < 0 {
                slots[index] = Slot(a: a, b: b, row: row)
                groups += 1
            } else if time < instants[best] || (time == instants[best] && precedes(row, best)) {
                slots[index].row = row
            }
        }
        var found: [(key: GroupKey, row: Int)] = []
        found.reserveCapacity(groups)
        for slot in slots where slot.row >= 0 { found.append((GroupKey(a: slot.a, b: slot.b), slot.row)) }
        if inKeyOrder { found.sort { $0.key.a != $1.key.a ? $0.key.a < $1.key.a : $0.key.b < $1.key.b } }
        keys = found.map(\.key)
        rows = found.map(\.row)
    }

    /// Whether one row's tie-break value comes strictly before another's (NULL last).
    private static func tieOrder(_ column: Column?) -> (Int, Int) -> Bool {
        guard let column else { return { _, _ in false } }
        if column.field.type.storage == .int {
            let values = column.ints, nulls = column.nulls
            return { x, y in
                if !nulls.isEmpty && (nulls[x] || nulls[y]) { return !nulls[x] && nulls[y] }
                return values[x] < values[y]
            }
        }
        return { x, y in Value.sortsBefore(column.value(at: x), column.value(at: y)) }
    }
}
