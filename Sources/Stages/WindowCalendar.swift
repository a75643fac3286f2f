import PipelineKit

/// What finding an incremental run's changed groups needs of every group:
/// its key, its start day and its window ends.
protocol GroupSchedule {
    var keys: [GroupKey] { get }
    var index: GroupIndex { get }
    var startDay: [Int64] { get }
    /// A group's window ends, in window order; nil for an open-ended window.
    func windowEnds(of group: Int) -> ArraySlice<Int64?>
}

extension GroupTable: GroupSchedule {}

/// Start days and window ends of groups as the last run wrote them: read
/// from the stage's previous output (the table its factUpsert keeps) for the
/// groups that can have changed, instead of reading every anchor row and
/// working every group's schedule out again.
///
/// A group's schedule depends only on its anchor row and its lookups, so it
/// holds for every group with no new anchor row and no changed lookup row;
/// those that have one are recomputed whatever the calendar says. Groups the
/// last run did not output (a required lookup missed) are not in it: none
/// of their windows can change the output until an anchor or lookup row of
/// theirs arrives, which makes them changed groups.
///
/// Only two kinds of groups need their schedule: those with a window that
/// closed since the last run's as_of (a window that closed earlier can hold
/// a new event only if it is dated before that as_of; one still open shows
/// no measures), and those with a new event dated before that as_of (a late
/// one, which may fall in a window closed earlier). Both are read by key or
/// by date on the server: a few hundred rows a day.
struct WindowCalendar: GroupSchedule {
    private(set) var keys: [GroupKey] = []
    private(set) var index = GroupIndex([])
    private(set) var startDay: [Int64] = []
    private var windowEnd: [Int64?] = []
    private let windowCount: Int
    private let start: String
    private let stage: WindowAggregate

    var groupCount: Int { keys.count }

    func windowEnds(of group: Int) -> ArraySlice<Int64?> {
        windowEnd[(group * windowCount)..<((group + 1) * windowCount)]
    }

    /// The columns the calendar is read from: the group columns, the date
    /// the windows start on (the one `days: 0` from the start) and every
    /// window's end date; nil when the stage has no such start date or the
    /// previous output lacks one of them or is not keyed by the groups.
    static func columns(of stage: WindowAggregate, in previous: PersistedRows) -> [Field]? {
        guard let start = startDate(of: stage), Set(previous.key) == Set(stage.groupBy) else { return nil }
        let names = stage.groupBy + [start] + stage.windows.map(\.end)
        var fields: [Field] = []
        for name in names where !fields.contains(where: { $0.name == name }) {
            guard let field = previous.rows.schema.first(where: { $0.name == name }) else { return nil }
            let fits = stage.groupBy.contains(name) ? field.type.isInteger : field.type == .date
            guard fits else { return nil }
            fields.append(field)
        }
        return fields
    }

    /// The date that is the start date itself, which windows begin on.
    static func startDate(of stage: WindowAggregate) -> String? {
        stage.dates.first { if case .days(0) = $0.offset { true } else { false } }?.name
    }

    /// SQL selecting the groups with a window ending after `previous` and no
    /// later than `asOf` (an open-ended window never ends).
    static func closing(after previous: CivilDate, by asOf: CivilDate, stage: WindowAggregate) -> String {
        let ends = Set(stage.windows.map(\.end)).sorted()
        return "(" + ends.map { end in
            let column = "whole.\(SQL.ident(end))"
            return "(\(column) > '\(previous)'::date AND \(column) <= '\(asOf)'::date)"
        }.joined(separator: " OR ") + ")"
    }

    init?(stage: WindowAggregate) {
        guard let start = Self.startDate(of: stage) else { return nil }
        self.stage = stage
        self.start = start
        windowCount = stage.windows.count
    }

    func contains(_ key: GroupKey) -> Bool { index.find(key.a, key.b) >= 0 }

    /// Adds the groups of `rows` not already in the calendar; false when a
    /// row has no key or no start, which a table this stage's output was
    /// written to never has.
    mutating func add(_ rows: any Relation, context: ScanContext) throws -> Bool {
        var usable = true
        var known = Set(keys)
        try rows.scan(context) { batch in
            guard usable else { return }
            let keyColumns = try stage.groupBy.map { batch.columns[try batch.require($0, in: "previous output")] }
            let startColumn = batch.columns[try batch.require(start, in: "previous output")]
            let endColumns = try stage.windows.map { batch.columns[try batch.require($0.end, in: "previous output")] }
            for row in 0..<batch.count {
                guard !keyColumns.contains(where: { $0.isNull(row) }), !startColumn.isNull(row) else { usable = false; return }
                let key = GroupKey(keyColumns, row: row)
                guard known.insert(key).inserted else { continue }
                keys.append(key)
                startDay.append(startColumn.ints[row])
                for column in endColumns { windowEnd.append(column.isNull(row) ? nil : column.ints[row]) }
            }
        }
        index = GroupIndex(keys)
        return usable
    }
}
