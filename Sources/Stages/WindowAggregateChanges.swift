import Foundation
import PipelineKit

/// Which groups of a windowAggregate an incremental run must recompute.
///
/// A group's row depends on its anchor rows, the lookup rows its keys match,
/// its events inside closed windows, and which windows are closed. So the
/// groups to recompute are those with a new anchor row, a changed lookup
/// row, a new event falling in a window closed at this as_of (an event in a
/// still-open window changes nothing that is output: open windows are NULL),
/// or a window that closed since the last run's as_of.
struct ChangedGroups {
    /// Every affected key, including keys whose group no longer forms (so a writer can delete it).
    private(set) var keys: Set<GroupKey> = []
    /// Counts by cause, for the log and the lineage.
    private(set) var causes: [String: Int] = [:]

    /// The counts as the log shows them: `new_anchor_rows=3, windows_closed=487`.
    var causesText: String { causes.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ", ") }

    private mutating func add(_ key: GroupKey, _ cause: String) {
        if keys.insert(key).inserted { causes[cause, default: 0] += 1 }
    }

    /// What the inputs say changed since the last run, the queries started at
    /// once (they run on the server while the stage reads and builds the
    /// groups); nil when an input cannot say, and every group is recomputed.
    struct Inputs {
        let anchor: any Relation
        let events: any Relation

        init?(stage: WindowAggregate, lookups: [String: LookupChanges], anchor: any Relation, events: any Relation,
              context: StageContext) {
            guard let anchorChanges = (anchor as? any ChangeTrackedRelation)?.changes,
                  let eventChanges = (events as? any ChangeTrackedRelation)?.changes else {
                context.logger.info("inputs do not track changes; recomputing every group")
                return nil
            }
            if let unknown = lookups.first(where: { $0.value.changedKeys == nil }) {
                context.logger.info("lookup '\(unknown.key)' cannot say what changed; recomputing every group")
                return nil
            }
            self.anchor = Self.prefetch(Self.narrowed(anchorChanges, to: stage.groupBy), context: context.scan)
            self.events = Self.prefetch(Self.narrowed(eventChanges, to: stage.groupBy + [stage.eventTime]), context: context.scan)
        }

        /// Only the columns that finding the changed groups reads, since the changes are held whole.
        static func narrowed(_ changes: any Relation, to names: [String]) -> any Relation {
            guard let copy = changes as? CopyRelation else { return changes }
            let fields = copy.schema.filter { names.contains($0.name) }
            // A missing column is reported by the scan that needs it.
            guard Set(fields.map(\.name)) == Set(names) else { return changes }
            return copy.filtered("true", columns: fields)
        }

        /// Changes are read whole, not as far as a bounded read-ahead: a read
        /// waiting for its consumer keeps its tables locked, and the stage
        /// meanwhile reads the anchor whole, maybe from one of those tables. A
        /// TRUNCATE queued behind the first lock would queue that read behind
        /// itself, and the three would wait for each other for ever, the server
        /// unable to see it. A day's changes are a few batches; after a long
        /// pause they are as many as the rows that came, and rows whose
        /// tracking key is NULL are among them every time (see README).
        static func prefetch(_ changes: any Relation, context: ScanContext) -> any Relation {
            // An extract's changes are read ahead already (ReadAhead), and can be scanned as they are.
            changes is ReadAhead ? changes : Prefetched.whole(changes, context: context)
        }
    }

    static func find(stage: WindowAggregate, groups: GroupTable, lookups: [String: LookupChanges], changes: Inputs,
                     previousAsOf: CivilDate, context: StageContext) throws -> ChangedGroups {
        var changed = ChangedGroups()
        try changed.addAnchorChanges(changes.anchor, stage: stage, context: context)
        try changed.addLookupChanges(stage: stage, groups: groups, lookups: lookups)
        changed.addClosedWindows(groups: groups, from: previousAsOf, to: stage.asOf)
        changed.addEventChanges(try eventDays(changes.events, stage: stage, context: context), stage: stage, groups: groups)
        return changed
    }

    private mutating func addAnchorChanges(_ changes: any Relation, stage: WindowAggregate, context: StageContext) throws {
        try changes.scan(context.scan) { batch in
            let keys = try stage.groupBy.map { batch.columns[try batch.require($0, in: "changes of '\(stage.anchorFrom)'")] }
            for row in 0..<batch.count where !keys.contains(where: { $0.isNull(row) }) {
                add(GroupKey(keys, row: row), "new_anchor_rows")
            }
        }
    }

    private mutating func addLookupChanges(stage: WindowAggregate, groups: GroupTable, lookups: [String: LookupChanges]) throws {
        let uses = try stage.lookupUses.map { input, key in
            (lookup: lookups[input]!, key: try key.map { try groups.anchor.require($0, in: "anchor input '\(stage.anchorFrom)'") })
        }
        let changing = uses.filter { !($0.lookup.changedKeys?.isEmpty ?? false) }
        guard !changing.isEmpty else { return }
        for (group, key) in groups.keys.enumerated() {
            let row = groups.anchorRow[group]
            if changing.contains(where: { use in use.lookup.mayHaveChanged(forRaw: use.key.map { groups.anchor.columns[$0].value(at: row) }) }) {
                add(key, "changed_lookup_rows")
            }
        }
    }

    /// Where the calendar path reads the last run's schedules: the groups with
    /// a window that closed since its as_of, and any groups by key.
    struct CalendarReads {
        let closedSincePreviousAsOf: any Relation
        let byKey: (KeyScope) -> any Relation
    }

    /// The changed groups found with the schedules the last run wrote (see
    /// `WindowCalendar`) instead of every group's: a changed lookup row is
    /// mapped to its groups through the anchor rows of its key, read by key.
    static func find(stage: WindowAggregate, calendar reads: CalendarReads, lookupChanges: [GroupColumnChanges],
                     anchor: any KeyRestrictable, changes: Inputs, previousAsOf: CivilDate,
                     context: StageContext) throws -> ChangedGroups? {
        var changed = ChangedGroups()
        try changed.addAnchorChanges(changes.anchor, stage: stage, context: context)
        for lookupChange in lookupChanges {
            let rows = anchor.restricted(to: KeyScope(columns: [lookupChange.column], first: lookupChange.values.sorted()))
            let narrowed = Inputs.narrowed(rows, to: stage.groupBy)
            try narrowed.scan(context.scan) { batch in
                let keys = try stage.groupBy.map { batch.columns[try batch.require($0, in: "anchor input '\(stage.anchorFrom)'")] }
                for row in 0..<batch.count where !keys.contains(where: { $0.isNull(row) }) {
                    changed.add(GroupKey(keys, row: row), "changed_lookup_rows")
                }
            }
        }
        let events = try eventDays(changes.events, stage: stage, context: context)
        guard var calendar = WindowCalendar(stage: stage),
              try calendar.add(reads.closedSincePreviousAsOf, context: context.scan) else { return nil }
        // A late event can fall in a window that had closed before the last run.
        let late = Set(events.filter { $0.day < previousAsOf.pgDays && !calendar.contains($0.key) }.map(\.key))
        if !late.isEmpty {
            let sorted = late.sorted { ($0.a, $0.b) < ($1.a, $1.b) }
            let scope = KeyScope(columns: stage.groupBy, first: sorted.map(\.a), second: stage.groupBy.count > 1 ? sorted.map(\.b) : [])
            guard try calendar.add(reads.byKey(scope), context: context.scan) else { return nil }
        }
        changed.addClosedWindows(groups: calendar, from: previousAsOf, to: stage.asOf)
        changed.addEventChanges(events, stage: stage, groups: calendar)
        return changed
    }

    /// A lookup's changed keys as values of the one group column it is keyed
    /// by, e.g. new users as `user_id`s; nil when some lookup the stage uses
    /// changed and is keyed otherwise (its groups are then found by going
    /// through every anchor row).
    struct GroupColumnChanges {
        let column: String
        let values: Set<Int64>

        static func of(stage: WindowAggregate, lookups: [String: LookupChanges]) -> [GroupColumnChanges]? {
            var changes: [GroupColumnChanges] = []
            for (input, key) in stage.lookupUses {
                let lookup = lookups[input]!
                guard let changedKeys = lookup.changedKeys else { return nil }
                guard !changedKeys.isEmpty else { continue }
                guard key.count == 1, stage.groupBy.contains(key[0]), lookup.normalization.steps.isEmpty else { return nil }
                var values = Set<Int64>()
                for changedKey in changedKeys {
                    guard changedKey.count == 1, case .int(let value) = changedKey[0] else { return nil }
                    values.insert(value)
                }
                changes.append(GroupColumnChanges(column: key[0], values: values))
            }
            return changes
        }
    }

    private mutating func addClosedWindows(groups: some GroupSchedule, from previous: CivilDate, to asOf: CivilDate) {
        let (low, high) = (previous.pgDays, asOf.pgDays)
        guard high > low else { return }
        for (group, key) in groups.keys.enumerated() {
            if groups.windowEnds(of: group).contains(where: { $0.map { $0 > low && $0 <= high } ?? false }) { add(key, "windows_closed") }
        }
    }

    /// The group and local day of each new event that has both.
    private static func eventDays(_ changes: any Relation, stage: WindowAggregate,
                                  context: StageContext) throws -> [(key: GroupKey, day: Int64)] {
        var events: [(key: GroupKey, day: Int64)] = []
        var mapper = LocalDayMapper(zone: stage.timezone)
        try changes.scan(context.scan) { batch in
            let what = "changes of '\(stage.eventsFrom)'"
            let keys = try stage.groupBy.map { batch.columns[try batch.require($0, in: what)] }
            let time = batch.columns[try batch.require(stage.eventTime, in: what)]
            for row in 0..<batch.count where !keys.contains(where: { $0.isNull(row) }) && !time.isNull(row) {
                events.append((GroupKey(keys, row: row), mapper.localDay(micros: time.ints[row])))
            }
        }
        return events
    }

    private mutating func addEventChanges(_ events: [(key: GroupKey, day: Int64)], stage: WindowAggregate,
                                          groups: some GroupSchedule) {
        let asOf = stage.asOf.pgDays
        for (key, day) in events {
            let group = groups.index.find(key.a, key.b)
            guard group >= 0, day >= groups.startDay[group] else { continue }
            if groups.windowEnds(of: group).contains(where: { end in end.map { day < $0 && $0 <= asOf } ?? false }) { add(key, "new_events_in_closed_windows") }
        }
    }

    /// The keys as a scope for writers and for reading events of these groups only.
    func scope(columns: [String]) -> KeyScope {
        let sorted = keys.sorted { ($0.a, $0.b) < ($1.a, $1.b) }
        return KeyScope(columns: columns, first: sorted.map(\.a), second: columns.count > 1 ? sorted.map(\.b) : [])
    }
}
