import Foundation
import PipelineKit

/// Two integer keys; a single-key grouping leaves `b` at zero.
struct GroupKey: Hashable {
    let a: Int64
    let b: Int64

    init(a: Int64, b: Int64) {
        self.a = a
        self.b = b
    }

    /// The key of `row` in one or two (non-NULL) integer key columns.
    init(_ keys: [Column], row: Int) {
        self.init(a: keys[0].ints[row], b: keys.count > 1 ? keys[1].ints[row] : 0)
    }
}

/// Per-group state of a `windowAggregate`, in flat arrays indexed by group
/// (and window and measure), so that the event loop touches no objects.
struct GroupTable {
    let stage: WindowAggregate
    let anchor: Batch
    /// Each group's key (a group is its position), in key order unless `scheduleOnly`.
    private(set) var keys: [GroupKey] = []
    /// Key → group, for the event loop and for changes.
    private(set) var index = GroupIndex([])
    private(set) var anchorRow: [Int] = []
    private(set) var startDay: [Int64] = []
    /// Per group, `stage.attributes.count` values in one flat array.
    private(set) var attributeValues: [Value] = []
    /// Per group, `stage.dates.count` days in one flat array; nil is NULL.
    private(set) var dateValues: [Int64?] = []
    /// End day per group and window; nil for an open-ended window.
    private(set) var windowEnd: [Int64?] = []
    private var sums: [Int64] = []
    /// Per measure: the decimal scale of its column (values are stored in units of 10^-scale); 0 without a column.
    private var scales: [Int] = []
    static let overflow = StageFailure.data("a sum of a window does not fit in 64 bits")
    private var lookupCounts: [Int64] = []
    private var distinct = DistinctBits()

    var windowCount: Int { stage.windows.count }
    var measureCount: Int { stage.measures.count }
    var groupCount: Int { anchorRow.count }

    /// A group's window ends, in window order; nil for an open-ended window.
    func windowEnds(of group: Int) -> ArraySlice<Int64?> {
        windowEnd[(group * windowCount)..<((group + 1) * windowCount)]
    }

    /// The groups of `anchor`, or only those with a key in `keys` (an incremental
    /// run's changed groups). A `scheduleOnly` table holds every group's start
    /// and window ends and nothing else: the attributes no date depends on are
    /// NULL, required lookups drop nothing and nothing is counted in the
    /// metrics. It is what finding the changed groups needs, at a fraction of
    /// the cost of a whole table.
    init(stage: WindowAggregate, anchor: Batch, lookups: [String: Lookup], context: StageContext,
         keys: Set<GroupKey>? = nil, scheduleOnly: Bool = false) throws {
        self.stage = stage
        self.anchor = anchor
        let what = "anchor input '\(stage.anchorFrom)'"
        let keyPositions = try stage.groupBy.map { try anchor.require($0, in: what) }
        for position in keyPositions where !anchor.columns[position].field.type.isInteger {
            throw StageFailure.config("group_by column '\(anchor.columns[position].field.name)' must be an integer column, not \(anchor.columns[position].field.type)")
        }
        let timePosition = try anchor.require(stage.earliest, in: what)
        guard anchor.columns[timePosition].field.type == .timestamptz else {
            throw StageFailure.config("anchor.earliest '\(stage.earliest)' must be timestamptz, not \(anchor.columns[timePosition].field.type)")
        }
        let tieBreak = try stage.tieBreak.map { anchor.columns[try anchor.require($0, in: what)] }
        let times = anchor.columns[timePosition]
        let chosen = AnchorRows(keyColumns: keyPositions.map { anchor.columns[$0] }, times: times, tieBreak: tieBreak,
                                count: anchor.count, only: keys, inKeyOrder: !scheduleOnly)
        if !scheduleOnly {
            context.metrics.exclude("anchor_null_key", count: chosen.nullKeys)
            context.metrics.exclude("anchor_null_time", count: chosen.nullTimes)
            context.metrics.exclude("anchor_infinite_time", count: chosen.infiniteTimes)
        }
        let rows = chosen.rows

        // Attributes, dropping groups whose required lookups miss.
        var mapper = LocalDayMapper(zone: stage.timezone)
        var missing: [String: Int] = [:]
        // Column positions are found once, not per group.
        enum Source { case anchor(Int), lookup(Lookup, key: [Int], column: Int, required: Bool), skipped }
        let datesNeed = Set(stage.dates.compactMap { rule -> String? in
            if case .daysFrom(let attribute) = rule.offset { return attribute }
            return nil
        })
        let sources: [Source] = try stage.attributes.map { attribute in
            if scheduleOnly && !datesNeed.contains(attribute.name) { return .skipped }
            switch attribute.source {
            case .anchor(let column):
                return .anchor(try anchor.require(column, in: what))
            case let .lookup(input, keyColumns, column, required):
                let lookup = lookups[input]!
                return .lookup(lookup, key: try keyColumns.map { try anchor.require($0, in: what) },
                               column: lookup.schema.firstIndex { $0.name == column }!, required: required && !scheduleOnly)
            }
        }
        // One attribute at a time over all groups, so that each source is
        // unpacked once, not once per group.
        let width = sources.count
        var values = [Value](repeating: .null, count: rows.count * width)
        var dropped = [Bool](repeating: false, count: rows.count)
        for (a, source) in sources.enumerated() {
            var notFound = 0
            switch source {
            case .skipped:
                continue
            case .anchor(let position):
                let column = anchor.columns[position]
                for (g, row) in rows.enumerated() { values[g * width + a] = column.value(at: row) }
            case let .lookup(lookup, keyPositions, column, required)
                where lookup.isKeyedByInt && keyPositions.count == 1 && anchor.columns[keyPositions[0]].field.type.storage == .int:
                let keyColumn = anchor.columns[keyPositions[0]], taken = lookup.rows.columns[column]
                let fallback = lookup.defaultRow?[column] ?? .null
                for (g, row) in rows.enumerated() {
                    let first = keyColumn.isNull(row) ? nil : lookup.firstPosition(forInt: keyColumn.ints[row])
                    if required && first == nil { notFound += 1; dropped[g] = true }
                    values[g * width + a] = first.map { taken.value(at: $0) } ?? fallback
                }
            case let .lookup(lookup, keyPositions, column, required):
                let taken = lookup.rows.columns[column]
                let fallback = lookup.defaultRow?[column] ?? .null
                // Normalising a text key (a phone number) costs more than a
                // lookup, and anchors repeat few distinct ones: each distinct
                // raw key is resolved once.
                let normalizes = !lookup.normalization.steps.isEmpty
                var resolved: [[Value]: Int?] = [:]
                for (g, row) in rows.enumerated() {
                    let raw = keyPositions.map { anchor.columns[$0].value(at: row) }
                    let first: Int?
                    if normalizes, let known = resolved[raw] {
                        first = known
                    } else {
                        first = lookup.positions(forRaw: raw).first
                        if normalizes { resolved[raw] = first }
                    }
                    if required && first == nil { notFound += 1; dropped[g] = true }
                    values[g * width + a] = first.map { taken.value(at: $0) } ?? fallback
                }
            }
            if notFound > 0 { missing["\(stage.attributes[a].name)_not_found", default: 0] += notFound }
        }
        if dropped.contains(true) {
            var kept = 0
            for g in rows.indices where !dropped[g] {
                for a in 0..<width { values[kept * width + a] = values[g * width + a] }
                kept += 1
            }
            values.removeLast((rows.count - kept) * width)
            self.keys = zip(chosen.keys, dropped).compactMap { $1 ? nil : $0 }
            anchorRow = zip(rows, dropped).compactMap { $1 ? nil : $0 }
        } else {
            self.keys = chosen.keys
            anchorRow = rows
        }
        attributeValues = values
        startDay = anchorRow.map { mapper.localDay(micros: times.ints[$0]) }
        for (rule, count) in missing { context.metrics.exclude(rule, count: count) }
        index = GroupIndex(self.keys)
        try computeDates()
        if scheduleOnly { return }
        try computeLookupCounts(lookups: lookups)
        sums = [Int64](repeating: 0, count: groupCount * windowCount * measureCount)
        scales = [Int](repeating: 0, count: measureCount)
    }

    private mutating func computeDates() throws {
        // Groups share few start days: each day's month arithmetic is done once.
        enum Rule { case months(shift: Int), days(Int64), daysFrom(attribute: Int) }
        var shifts: [MonthShift] = []
        let rules: [Rule] = stage.dates.map { rule in
            switch rule.offset {
            case .months(let months):
                shifts.append(MonthShift(months: months, days: startDay))
                return .months(shift: shifts.count - 1)
            case .days(let days): return .days(Int64(days))
            case .daysFrom(let attribute): return .daysFrom(attribute: stage.attributes.firstIndex { $0.name == attribute }!)
            }
        }
        let attributes = stage.attributes.count
        dateValues = []
        dateValues.reserveCapacity(groupCount * rules.count)
        for group in 0..<groupCount {
            let day = startDay[group]
            for (r, rule) in rules.enumerated() {
                switch rule {
                case .months(let shift): dateValues.append(try Self.storable(shifts[shift].shift(day), date: stage.dates[r].name))
                case .days(let days): dateValues.append(try Self.storable(day + days, date: stage.dates[r].name))
                case .daysFrom(let position):
                    dateValues.append(try attributeValues[group * attributes + position].intValue.map { days in
                        let (end, overflow) = day.addingReportingOverflow(days)
                        guard !overflow else {
                            throw StageFailure.data("date '\(stage.dates[r].name)': the start date plus \(days) days (attribute '\(stage.attributes[position].name)') is beyond any date")
                        }
                        return try Self.storable(end, date: stage.dates[r].name)
                    })
                }
            }
        }
        let datePositions = stage.windows.map { window in stage.dates.firstIndex { $0.name == window.end }! }
        windowEnd = []
        windowEnd.reserveCapacity(groupCount * windowCount)
        for group in 0..<groupCount {
            for position in datePositions { windowEnd.append(dateValues[group * stage.dates.count + position]) }
        }
    }

    /// A computed date PostgreSQL can store; offsets of up to 10,000 years from a start near its limits may not be.
    private static func storable(_ day: Int64, date: String) throws -> Int64 {
        guard PGTime.finiteDays.contains(day) else {
            throw StageFailure.data("date '\(date)': \(CivilDate(pgDays: day)) is beyond PostgreSQL's dates (4714-11-24 BC to 5874897-12-31)")
        }
        return day
    }

    /// count_lookup measures depend only on the group, not on events.
    private mutating func computeLookupCounts(lookups: [String: Lookup]) throws {
        lookupCounts = [Int64](repeating: 0, count: groupCount * windowCount * measureCount)
        for (m, measure) in stage.measures.enumerated() {
            guard case let .countLookup(input, keyColumns, column) = measure.kind else { continue }
            let lookup = lookups[input]!
            let valueColumn = try lookup.rows.require(column, in: "lookup '\(input)'")
            let keyPositions = try keyColumns.map { try anchor.require($0, in: "anchor input '\(stage.anchorFrom)'") }
            var sortedByKey: [[Value]: [Int64]] = [:]
            for group in 0..<groupCount {
                let raw = keyPositions.map { anchor.columns[$0].value(at: anchorRow[group]) }
                let offsets: [Int64]
                if let cached = sortedByKey[raw] {
                    offsets = cached
                } else {
                    offsets = lookup.positions(forRaw: raw).compactMap { lookup.rows.columns[valueColumn].value(at: $0).intValue }.sorted()
                    sortedByKey[raw] = offsets
                }
                for w in 0..<windowCount {
                    guard let end = windowEnd[group * windowCount + w] else { continue }
                    let length = end - startDay[group]
                    lookupCounts[(group * windowCount + w) * measureCount + m] = Int64(Self.countBelow(offsets, length))
                }
            }
        }
    }

    static func countBelow(_ sorted: [Int64], _ limit: Int64) -> Int {
        var low = 0, high = sorted.count
        while low < high {
            let mid = (low + high) / 2
            if sorted[mid] < limit { low = mid + 1 } else { high = mid }
        }
        return low
    }

    /// Streams the events once, adding each to every window it falls in.
    ///
    /// The loop reads plain arrays only: measure kinds, filters and window
    /// ends are flattened up front so that no enum payloads or strings are
    /// copied per row.
    mutating func aggregate(events: any Relation, context: StageContext) throws {
        let what = "events input '\(stage.eventsFrom)'"
        var mapper = LocalDayMapper(zone: stage.timezone)
        var nullKeys = 0, nullTimes = 0, withoutGroup = 0, beforeStart = 0, afterWindows = 0
        let windows = windowCount, measures = measureCount
        let plan = MeasurePlan(stage.measures)
        // Per group, contiguous: start day, each window's end, the latest end.
        let stride = windows + 2
        var spans = [Int64](repeating: 0, count: groupCount * stride)
        for group in 0..<groupCount {
            spans[group * stride] = startDay[group]
            var latest = Int64.min
            for w in 0..<windows {
                let end = windowEnd[group * windows + w] ?? Int64.min
                spans[group * stride + 1 + w] = end
                latest = max(latest, end)
            }
            spans[group * stride + 1 + windows] = latest
        }
        let lookupIndex = index  // a local copy: the event loop reads it without going through self
        var cellOf: [Int32] = []
        var dense = DenseIndexer()
        var overflowed = false, eventsSeen: Int64 = 0
        distinct.configure(slots: groupCount * windows * plan.distinctCount)
        scales = stage.measures.map { measure in
            guard case .sum(let column, _, _, _) = measure.kind else { return 0 }
            return events.schema.first { $0.name == column }?.type.scale ?? 0
        }
        // clamp_min is in the column's units, compared with values stored in units of 10^-scale.
        let clampMins = try stage.measures.indices.map { m -> Int64 in
            guard plan.clampMin[m] != .min else { return .min }
            let (clamp, overflow) = plan.clampMin[m].multipliedReportingOverflow(by: Int64.pow10(scales[m]))
            if overflow { throw Self.overflow }
            return clamp
        }
        try events.scan(context.scan) { batch in
            let keys = try stage.groupBy.map { batch.columns[try batch.require($0, in: what)] }
            for key in keys where !key.field.type.isInteger {
                throw StageFailure.config("group_by column '\(key.field.name)' of \(what) must be an integer column, not \(key.field.type)")
            }
            let time = batch.columns[try batch.require(stage.eventTime, in: what)]
            guard time.field.type == .timestamptz else {
                throw StageFailure.config("events.time '\(stage.eventTime)' must be timestamptz, not \(time.field.type)")
            }
            let sources: [Column?] = try stage.measures.map { measure in
                switch measure.kind {
                case .countDistinct(let column), .sum(let column, _, _, _): batch.columns[try batch.require(column, in: what)]
                default: nil
                }
            }
            for source in sources.compactMap({ $0 }) where source.field.type.storage != .int {
                throw StageFailure.config("measure column '\(source.field.name)' must be an integer column, not \(source.field.type)")
            }
            let filters: [Column?] = try stage.measures.map { measure in
                try measure.filter.map { batch.columns[try batch.require($0.column, in: what)] }
            }
            // at_least and at_most are whole numbers, compared with the values as stored.
            for filter in filters.compactMap({ $0 }) where !(filter.field.type.isExactNumber && filter.field.type.scale == 0) {
                throw StageFailure.config("where column '\(filter.field.name)' must be an integer column, not \(filter.field.type)")
            }
            // Pass 1: each event's cell (-1 when it counts nowhere): its group and
            // the window with the earliest end after its day. Windows share their
            // start, so an event in that window is in every window ending no
            // earlier; `output` adds those up. One cell per event instead of one
            // per window keeps the writes to one cache line.
            let count = batch.count
            cellOf.removeAll(keepingCapacity: true)
            let keyA = keys[0].ints, keyANulls = keys[0].nulls
            let twoKeys = keys.count > 1
            let keyB = twoKeys ? keys[1].ints : [], keyBNulls = twoKeys ? keys[1].nulls : []
            let times = time.ints, timeNulls = time.nulls
            for row in 0..<count {
                var cell = -1
                if (!keyANulls.isEmpty && keyANulls[row]) || (twoKeys && !keyBNulls.isEmpty && keyBNulls[row]) {
                    nullKeys += 1
                } else if !timeNulls.isEmpty && timeNulls[row] {
                    nullTimes += 1
                } else {
                    let found = lookupIndex.find(keyA[row], twoKeys ? keyB[row] : 0)
                    if found < 0 {
                        withoutGroup += 1
                    } else {
                        let day = mapper.localDay(micros: times[row])
                        let span = found * stride
                        if day < spans[span] {
                            beforeStart += 1
                        } else if day >= spans[span + 1 + windows] {
                            afterWindows += 1
                        } else {
                            var window = 0, earliest = Int64.max
                            for w in 0..<windows {
                                let end = spans[span + 1 + w]
                                if day < end && end < earliest { (window, earliest) = (w, end) }
                            }
                            cell = found * windows + window
                        }
                    }
                }
                cellOf.append(Int32(cell))
            }
            // Pass 2, one measure at a time: tight loops over plain arrays.
            defer { eventsSeen += Int64(count) }
            for m in 0..<measures where plan.op[m] != .none {
                let filterValues = filters[m]?.ints ?? [], filterNulls = filters[m]?.nulls ?? []
                let hasFilter = plan.hasFilter[m], atLeast = plan.atLeast[m], atMost = plan.atMost[m]
                let values = sources[m]?.ints ?? [], nulls = sources[m]?.nulls ?? []
                let op = plan.op[m], clampMin = clampMins[m]
                // Sums of 32-bit values over fewer than 2^31 events cannot
                // overflow: those skip the check in the hot loop (unless
                // clamp_min lifts the values beyond 32 bits).
                let narrow = (sources[m].map { [.smallint, .int, .bool].contains($0.field.type) } ?? true)
                    && clampMin <= Int64(Int32.max)
                let checked = !narrow || eventsSeen + Int64(count) >= Int64(Int32.max)
                let distinctOrdinal = plan.distinctOrdinal[m], distinctCount = plan.distinctCount
                for row in 0..<count {
                    let cell = Int(cellOf[row])
                    if cell < 0 { continue }
                    if hasFilter {
                        if !filterNulls.isEmpty && filterNulls[row] { continue }
                        let value = filterValues[row]
                        if value < atLeast || value > atMost { continue }
                    }
                    var amount: Int64 = 1
                    switch op {
                    case .distinct:
                        if !nulls.isEmpty && nulls[row] { continue }
                        amount = Int64(dense.index(of: values[row]))
                    case .sum:
                        amount = !nulls.isEmpty && nulls[row] ? 0 : values[row]
                        if amount < clampMin { amount = clampMin }
                    case .count, .none:
                        break
                    }
                    if op == .distinct {
                        distinct.insert(Int(amount), slot: cell * distinctCount + distinctOrdinal)
                    } else {
                        if checked {
                            let (total, overflow) = sums[cell * measures + m].addingReportingOverflow(amount)
                            sums[cell * measures + m] = total
                            overflowed = overflowed || overflow
                        } else {
                            sums[cell * measures + m] &+= amount
                        }
                    }
                }
            }
        }
        if overflowed { throw Self.overflow }
        context.metrics.exclude("event_null_key", count: nullKeys)
        context.metrics.exclude("event_null_time", count: nullTimes)
        context.metrics.exclude("event_without_group", count: withoutGroup)
        context.metrics.exclude("event_before_start", count: beforeStart)
        context.metrics.exclude("event_after_windows", count: afterWindows)
    }

    /// One row per group, in key order.
    func output(schema: [Field]) throws -> Batch {
        var batch = Batch(schema: schema, capacity: groupCount)
        let keyPositions = stage.groupBy.map { anchor.index(of: $0)! }
        let asOfDay = stage.asOf.pgDays
        let distinctMeasures = stage.measures.indices.filter { if case .countDistinct = stage.measures[$0].kind { true } else { false } }
        for group in 0..<groupCount {
            var row: [Value] = keyPositions.map { anchor.columns[$0].value(at: anchorRow[group]) }
            let attributes = stage.attributes.count, dates = stage.dates.count
            row += attributeValues[(group * attributes)..<((group + 1) * attributes)]
            row += dateValues[(group * dates)..<((group + 1) * dates)].map { $0.map(Value.int) ?? .null }
            let ends = windowEnds(of: group)
            for w in 0..<windowCount {
                guard let end = ends[ends.startIndex + w], end <= asOfDay else {
                    row += repeatElement(Value.null, count: measureCount)  // open: no values yet
                    continue
                }
                let base = (group * windowCount + w) * measureCount
                // Events were counted in the cell of the earliest-ending window
                // holding them: this window holds the cells of all windows ending no later.
                let cells = ends.indices.filter { ends[$0].map { $0 <= end } ?? false }.map { group * windowCount + ($0 - ends.startIndex) }
                for (m, measure) in stage.measures.enumerated() {
                    var sum: Int64 = 0
                    for cell in cells {
                        let (total, overflow) = sum.addingReportingOverflow(sums[cell * measureCount + m])
                        guard !overflow else { throw Self.overflow }
                        sum = total
                    }
                    switch measure.kind {
                    case .countDistinct:
                        let ordinal = distinctMeasures.firstIndex(of: m)!
                        row.append(.int(Int64(distinct.countUnion(slots: cells.map { $0 * distinctMeasures.count + ordinal }))))
                    case .count: row.append(.int(sum))
                    case .countLookup: row.append(.int(lookupCounts[base + m]))
                    case let .sum(_, _, divideBy, scale):
                        // A numeric is summed as stored: from units of 10^-scales[m] to units
                        // of 10^-scale, divided by divide_by, rounded once.
                        let (scaled, overflow) = sum.multipliedReportingOverflow(by: Int64.pow10(scale))
                        let (divisor, tooLarge) = divideBy.multipliedReportingOverflow(by: Int64.pow10(scales[m]))
                        guard !overflow, !tooLarge else { throw Self.overflow }
                        row.append(.int(Rounding.divide(scaled, by: divisor)))
                    }
                }
            }
            batch.append(row: row)
        }
        return batch
    }
}

/// A day plus a number of months (clamped to the month's end), remembered
/// per day over the span of the days it is made for.
struct MonthShift {
    let months: Int
    private let first: Int64
    private var known: [Int64]
    private static let unknown = Int64.min
    private static let maxSpan: Int64 = 1 << 20

    init(months: Int, days: [Int64]) {
        self.months = months
        let low = days.min() ?? 0, high = days.max() ?? 0
        first = low
        known = high - low < Self.maxSpan ? [Int64](repeating: Self.unknown, count: Int(high - low) + 1) : []
    }

    mutating func shift(_ day: Int64) -> Int64 {
        let offset = day &- first
        guard offset >= 0 && offset < Int64(known.count) else { return CivilDate(pgDays: day).adding(months: months).pgDays }
        if known[Int(offset)] == Self.unknown { known[Int(offset)] = CivilDate(pgDays: day).adding(months: months).pgDays }
        return known[Int(offset)]
    }
}

/// Exact decimal rounding in integers, half away from zero like PostgreSQL's round(numeric).
enum Rounding {
    static func divide(_ value: Int64, by divisor: Int64) -> Int64 {
        var quotient = value / divisor
        let remainder = value % divisor
        if 2 * remainder.magnitude >= divisor.magnitude {
            quotient += (value < 0) != (divisor < 0) ? -1 : 1
        }
        return quotient
    }
}

/// The measures of a windowAggregate flattened into arrays for the event loop.
struct MeasurePlan {
    enum Op: UInt8 { case distinct, sum, count, none }
    let op: [Op]
    let hasFilter: [Bool]
    let atLeast: [Int64]
    let atMost: [Int64]
    let clampMin: [Int64]
    /// Bitsets are kept for count-distinct measures only: their position among those.
    let distinctOrdinal: [Int]
    let distinctCount: Int

    init(_ measures: [WindowAggregate.Measure]) {
        op = measures.map { measure in
            switch measure.kind {
            case .countDistinct: .distinct
            case .sum: .sum
            case .count: .count
            case .countLookup: .none
            }
        }
        hasFilter = measures.map { $0.filter != nil }
        atLeast = measures.map { $0.filter?.atLeast ?? .min }
        atMost = measures.map { $0.filter?.atMost ?? .max }
        var ordinal = 0
        distinctOrdinal = measures.map { measure in
            guard case .countDistinct = measure.kind else { return -1 }
            defer { ordinal += 1 }
            return ordinal
        }
        distinctCount = ordinal
        clampMin = measures.map { measure in
            if case let .sum(_, clamp, _, _) = measure.kind { return clamp ?? .min }
            return .min
        }
    }
}

/// An open-addressing hash table from a two-integer key to a group number:
/// several times faster than a Dictionary in the per-event lookup. Key and
/// value share a slot, so a probe touches one cache line.
struct GroupIndex {
    private struct Slot {
        var a: Int64
        var b: Int64
        var group: Int64
    }

    private var slots: [Slot]
    private let mask: Int

    /// Group `i` is `keys[i]`.
    init(_ keys: [GroupKey]) {
        var capacity = 16
        while capacity < keys.count * 2 { capacity <<= 1 }
        mask = capacity - 1
        slots = [Slot](repeating: Slot(a: 0, b: 0, group: -1), count: capacity)
        for (group, key) in keys.enumerated() {
            var slot = Self.hash(key.a, key.b) & mask
            while slots[slot].group >= 0 { slot = (slot + 1) & mask }
            slots[slot] = Slot(a: key.a, b: key.b, group: Int64(group))
        }
    }

    @inline(__always)
    static func hash(_ a: Int64, _ b: Int64) -> Int {
        let mixed = (UInt64(bitPattern: a) &* 0x9E37_79B9_7F4A_7C15) ^ (UInt64(bitPattern: b) &* 0xC2B2_AE3D_27D4_EB4F)
        return Int(truncatingIfNeeded: mixed ^ (mixed >> 29))
    }

    /// The group of a key, or -1.
    @inline(__always)
    func find(_ a: Int64, _ b: Int64) -> Int {
        var index = Self.hash(a, b) & mask
        while true {
            let slot = slots[index]
            if slot.group < 0 { return -1 }
            if slot.a == a && slot.b == b { return Int(slot.group) }
            index = (index + 1) & mask
        }
    }
}

/// Maps the values of a count-distinct column to small dense integers (bit
/// positions). Small non-negative values, the usual case for ids, take an
/// array lookup; others fall back to a dictionary.
struct DenseIndexer {
    private var direct: [Int32] = []
    private var other: [Int64: Int32] = [:]
    private var next: Int32 = 0
    private static let directLimit: Int64 = 1 << 22

    @inline(__always)
    mutating func index(of value: Int64) -> Int {
        if value >= 0 && value < Self.directLimit {
            let slot = Int(value)
            if slot >= direct.count { direct.append(contentsOf: repeatElement(-1, count: max(slot + 1 - direct.count, direct.count))) }
            if direct[slot] < 0 {
                direct[slot] = next
                next += 1
            }
            return Int(direct[slot])
        }
        if let known = other[value] { return Int(known) }
        other[value] = next
        next += 1
        return Int(next - 1)
    }
}
