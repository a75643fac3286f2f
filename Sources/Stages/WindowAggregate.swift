import Foundation
import PipelineKit

/// Groups rows by integer keys around a per-group anchor and aggregates
/// timestamped events into calendar windows measured in a time zone.
///
/// Groups come from the anchor input (one per key, anchored on its earliest
/// row); attributes come from the anchor row or from lookups; dates are the
/// anchor's local date plus calendar months or days; events (another input)
/// fall into a window when start date ≤ local day < window end. A window is
/// closed when its end ≤ as_of; open windows yield NULL measures.
public struct WindowAggregate: Stage {
    public static let type = "windowAggregate"
    public static let summary = "Groups by integer keys around an earliest-row anchor; dates as anchor + months/days; measures of events per calendar window in a time zone, closed against as_of."
    public static let produces = OutputKind.relation

    static let measureKeys: [ConfigKey] = [
        .optional("count_distinct", .identifier, "count distinct non-NULL values of this event column"),
        .optional("sum", .identifier, "sum of this event column (NULL counts as 0)"),
        .optional("count", .boolean, "count events"),
        .optional("count_lookup", .identifier, "count rows of this multi-valued lookup for the group whose 'column' is below the window's length in days"),
        .optional("key", .names, "with count_lookup: the group columns matched against the lookup key"),
        .optional("column", .identifier, "with count_lookup: the lookup column holding a day offset"),
        .optional("where", .object([
            .required("column", .identifier, "event column tested"),
            .optional("at_least", .integer(), "keep events whose value is ≥ this (NULL never passes)"),
            .optional("at_most", .integer(), "keep events whose value is ≤ this (NULL never passes)"),
        ]), "only events passing this test count"),
        .optional("clamp_min", .integer(), "with sum: each value counts as max(coalesce(value, 0), clamp_min)"),
        .optional("divide_by", .integer(min: 1), "with sum: divide the total by this"),
        .optional("scale", .integer(min: 0), "with sum: decimal places of the result, rounded half away from zero (numeric(12,scale))"),
    ]

    public static let configKeys: [ConfigKey] = [
        .required("group_by", .names, "one or two integer key columns, present in the anchor and event inputs"),
        .required("anchor", .object([
            .required("from", .identifier, "input whose rows define the groups"),
            .required("earliest", .identifier, "timestamptz column; the group's earliest row is its anchor"),
            .optional("tie_break", .identifier, "integer column deciding ties (lowest wins)"),
        ]), "where groups and their start come from"),
        .required("timezone", .string, "IANA time zone for local dates, e.g. Asia/Kolkata"),
        .required("as_of", .date, "windows ending on or before this date are closed"),
        .optional("attributes", .dictionary(.object([
            .optional("anchor", .identifier, "take this column of the anchor row"),
            .optional("lookup", .identifier, "take a column from this lookup input"),
            .optional("key", .names, "anchor-row columns matched against the lookup key"),
            .optional("column", .identifier, "the lookup column to take"),
            .optional("required", .boolean, "drop groups whose key matches nothing (counted)"),
        ])), "per-group output columns"),
        .optional("dates", .dictionary(.object([
            .optional("months", .integer(), "start date + this many calendar months (end-of-month clamped), at most ±\(maxMonths)"),
            .optional("days", .integer(), "start date + this many days, at most ±\(maxDays)"),
            .optional("days_from", .identifier, "start date + the value of this integer attribute (NULL stays NULL)"),
        ])), "per-group date columns computed from the start date (the anchor's local date)"),
        .required("events", .object([
            .required("from", .identifier, "input holding the events"),
            .required("time", .identifier, "timestamptz column; NULL events are ignored (counted)"),
        ]), "the rows aggregated into windows"),
        .required("windows", .dictionary(.object([
            .required("end", .identifier, "a date column (from 'dates') ending the window, exclusive"),
        ])), "windows from the start date to an end date"),
        .required("measures", .dictionary(.object(measureKeys)), "measures computed per window, output as WINDOW_MEASURE (e.g. month1_completed_lessons)"),
    ]

    struct Attribute: Sendable {
        enum Source: Sendable { case anchor(String), lookup(input: String, key: [String], column: String, required: Bool) }
        let name: String
        let source: Source
    }

    struct DateRule: Sendable {
        enum Offset: Sendable { case months(Int), days(Int), daysFrom(String) }
        let name: String
        let offset: Offset
    }

    struct Measure: Sendable {
        enum Kind: Sendable {
            case countDistinct(String)
            case sum(column: String, clampMin: Int64?, divideBy: Int64, scale: Int)
            case count
            case countLookup(input: String, key: [String], column: String)
        }
        let name: String
        let kind: Kind
        let filter: (column: String, atLeast: Int64?, atMost: Int64?)?
    }

    let groupBy: [String]
    let anchorFrom: String
    let earliest: String
    let tieBreak: String?
    let timezone: TimeZone
    let asOf: CivilDate
    let attributes: [Attribute]
    let dates: [DateRule]
    let eventsFrom: String
    let eventTime: String
    let windows: [(name: String, end: String)]
    let measures: [Measure]

    public init(config: ConfigNode, build: StageBuild) throws {
        groupBy = config["group_by"]!.strings!
        if groupBy.isEmpty || groupBy.count > 2 {
            build.error(at: config["group_by"]!, "group_by takes one or two integer columns")
            throw StageBuild.Invalid()
        }
        let anchor = config["anchor"]!
        anchorFrom = try build.input(anchor["from"], kind: .relation)
        earliest = anchor["earliest"]!.string!
        tieBreak = anchor["tie_break"]?.string
        guard let zone = TimeZone(identifier: config["timezone"]!.string!) else {
            build.error(at: config["timezone"]!, "unknown time zone '\(config["timezone"]!.string!)'; use an IANA name such as Asia/Kolkata or UTC")
            throw StageBuild.Invalid()
        }
        timezone = zone
        asOf = CivilDate(written: config["as_of"]!.string!)!
        var attributes: [Attribute] = []
        var failed = false
        for entry in config["attributes"]?.entries ?? [] {
            let spec = entry.value
            if let column = spec["anchor"]?.string {
                attributes.append(Attribute(name: entry.key, source: .anchor(column)))
            } else if spec["lookup"] != nil {
                guard let input = try? build.input(spec["lookup"], kind: .lookup),
                      let key = spec["key"]?.strings, let column = spec["column"]?.string else {
                    if spec["key"] == nil || spec["column"] == nil {
                        build.error(at: spec, "attribute '\(entry.key)': a lookup attribute needs 'key' and 'column'")
                    }
                    failed = true
                    continue
                }
                attributes.append(Attribute(name: entry.key, source: .lookup(input: input, key: key, column: column,
                                                                           required: spec["required"]?.bool ?? false)))
            } else {
                build.error(at: spec, "attribute '\(entry.key)' needs 'anchor' or 'lookup'")
                failed = true
            }
        }
        self.attributes = attributes
        var dates: [DateRule] = []
        for entry in config["dates"]?.entries ?? [] {
            let spec = entry.value
            let given = ["months", "days", "days_from"].filter { spec[$0] != nil }
            guard given.count == 1 else {
                build.error(at: spec, "date '\(entry.key)' needs exactly one of months, days, days_from")
                failed = true
                continue
            }
            // Beyond 10,000 years no date is meant, and date arithmetic would overflow.
            for (key, limit) in [("months", Self.maxMonths), ("days", Self.maxDays)] {
                if let value = spec[key]?.int, value < -limit || value > limit {
                    build.error(at: spec[key]!, "date '\(entry.key)': \(key) must be between -\(limit) and \(limit) (10,000 years), not \(value)")
                    failed = true
                }
            }
            if let months = spec["months"]?.int { dates.append(DateRule(name: entry.key, offset: .months(months))) }
            if let days = spec["days"]?.int { dates.append(DateRule(name: entry.key, offset: .days(days))) }
            if let attribute = spec["days_from"]?.string {
                if !attributes.contains(where: { $0.name == attribute }) {
                    build.error(at: spec["days_from"]!, "date '\(entry.key)': days_from names '\(attribute)', which is not an attribute")
                    failed = true
                }
                dates.append(DateRule(name: entry.key, offset: .daysFrom(attribute)))
            }
        }
        self.dates = dates
        let events = config["events"]!
        eventsFrom = try build.input(events["from"], kind: .relation)
        eventTime = events["time"]!.string!
        var windows: [(String, String)] = []
        for entry in config["windows"]!.entries {
            let end = entry.value["end"]!.string!
            if !dates.contains(where: { $0.name == end }) {
                build.error(at: entry.value["end"]!, "window '\(entry.key)': end '\(end)' is not one of 'dates' (\(dates.map(\.name).joined(separator: ", ")))")
                failed = true
            }
            windows.append((entry.key, end))
        }
        self.windows = windows
        var measures: [Measure] = []
        for entry in config["measures"]!.entries {
            guard let measure = Self.measure(entry.key, entry.value, build: build) else { failed = true; continue }
            measures.append(measure)
        }
        self.measures = measures
        if failed { throw StageBuild.Invalid() }
    }

    private static func measure(_ name: String, _ spec: ConfigNode, build: StageBuild) -> Measure? {
        let kinds = ["count_distinct", "sum", "count", "count_lookup"].filter { spec[$0] != nil }
        guard kinds.count == 1 else {
            build.error(at: spec, "measure '\(name)' needs exactly one of count_distinct, sum, count, count_lookup")
            return nil
        }
        let filter = spec["where"].map { node in
            (column: node["column"]!.string!, atLeast: node["at_least"]?.int.map(Int64.init), atMost: node["at_most"]?.int.map(Int64.init))
        }
        switch kinds[0] {
        case "count_distinct":
            return Measure(name: name, kind: .countDistinct(spec["count_distinct"]!.string!), filter: filter)
        case "sum":
            let scale = spec["scale"]?.int ?? 0
            // The result is written as numeric(12, scale).
            guard scale <= 12 else {
                build.error(at: spec["scale"]!, "measure '\(name)': scale \(scale) is above 12, the most a sum keeps")
                return nil
            }
            return Measure(name: name, kind: .sum(column: spec["sum"]!.string!, clampMin: spec["clamp_min"]?.int.map(Int64.init),
                                                  divideBy: Int64(spec["divide_by"]?.int ?? 1), scale: scale),
                           filter: filter)
        case "count":
            return Measure(name: name, kind: .count, filter: filter)
        default:
            guard let input = try? build.input(spec["count_lookup"], kind: .lookup) else { return nil }
            guard let key = spec["key"]?.strings, let column = spec["column"]?.string else {
                build.error(at: spec, "measure '\(name)': count_lookup needs 'key' and 'column'")
                return nil
            }
            if filter != nil { build.error(at: spec["where"]!, "measure '\(name)': count_lookup takes no 'where'") }
            return Measure(name: name, kind: .countLookup(input: input, key: key, column: column), filter: nil)
        }
    }

    static let maxMonths = 120_000
    static let maxDays = 3_660_000

    /// Output columns: group keys, attributes, dates, then `<window>_<measure>`.
    func outputSchema(anchor: [Field], lookups: [String: [Field]]) throws -> [Field] {
        var fields = try groupBy.map { try requireField($0, in: anchor, of: "anchor input '\(anchorFrom)'") }
        for attribute in attributes {
            switch attribute.source {
            case .anchor(let column):
                fields.append(Field(attribute.name, try requireField(column, in: anchor, of: "anchor input '\(anchorFrom)'").type))
            case let .lookup(input, _, column, _):
                fields.append(Field(attribute.name, try requireField(column, in: lookups[input] ?? [], of: "lookup '\(input)'").type))
            }
        }
        for date in dates {
            // A date's or a numeric's stored integer is no count of days.
            if case .daysFrom(let attribute) = date.offset, let field = fields.first(where: { $0.name == attribute }),
               !(field.type.isExactNumber && field.type.scale == 0) {
                throw StageFailure.config("date '\(date.name)': days_from needs an integer attribute, and '\(attribute)' is \(field.type)")
            }
        }
        fields += dates.map { Field($0.name, .date) }
        for window in windows {
            for measure in measures {
                let type: DataType
                if case .sum(_, _, _, let scale) = measure.kind, scale > 0 {
                    type = .numeric(precision: 12, scale: scale)
                } else {
                    type = .int
                }
                fields.append(Field("\(window.name)_\(measure.name)", type))
            }
        }
        return fields
    }

    /// Every lookup the stage asks, by input, with the anchor columns it is
    /// asked by: attributes' and count_lookup measures'.
    var lookupUses: [(input: String, key: [String])] {
        attributes.compactMap { attribute in
            if case let .lookup(input, key, _, _) = attribute.source { (input, key) } else { nil }
        } + measures.compactMap { measure in
            if case let .countLookup(input, key, _) = measure.kind { (input, key) } else { nil }
        }
    }

    public func outputColumns(inputs: [String: [Field]]) throws -> [Field]? {
        var lookups: [String: [Field]] = [:]
        for attribute in attributes {
            if case .lookup(let input, _, _, _) = attribute.source {
                guard let columns = inputs[input] else { return nil }
                lookups[input] = columns
            }
        }
        guard let anchor = inputs[anchorFrom] else { return nil }
        return try outputSchema(anchor: anchor, lookups: lookups)
    }

    /// Fetching a group's events by key is random access on the source; once
    /// more than this fraction (1/n) of the groups changed, e.g. after a long
    /// gap between runs, one sequential read of all events is cheaper.
    static let changedShareForFullRecompute = 4

    public func run(_ context: StageContext) throws -> StageOutput {
        var lookupChanges: [String: LookupChanges] = [:]
        for (input, _) in lookupUses { lookupChanges[input] = try context.lookupChanges(input) }
        let anchor = try context.completeRelation(anchorFrom)
        let events = try context.completeRelation(eventsFrom)
        let changes = context.refresh?.previous.flatMap { previous in
            ChangedGroups.Inputs(stage: self, lookups: lookupChanges, anchor: anchor, events: events, context: context)
                .map { ($0, previous) }
        }
        var allAnchorRows: Batch? = nil
        var wholeLookups: [String: Lookup]? = nil
        if case let (changes, previous)? = changes {
            if case let (changed, groupCount)? = try changedFromCalendar(changes, previousAsOf: previous.asOf, anchor: anchor,
                                                                         lookups: lookupChanges, context: context) {
                if changed.keys.count <= groupCount / Self.changedShareForFullRecompute {
                    // Only the changed groups' anchor rows are needed, read by key,
                    // and the lookup rows they ask for.
                    let anchorRows = try (anchor as! any KeyRestrictable).restrictedByFirstColumnToo(to: changed.scope(columns: groupBy))
                        .materialize(context.scan)
                    return .relation(try recompute(changed, anchor: anchorRows, lookups: try self.lookups(askedBy: anchorRows, context),
                                                   events: events, schedules: "the last run's output", context: context))
                }
                logRecomputingAll(changed, of: groupCount, context: context)
            } else {
                // Finding what changed needs every group's window ends only; the
                // whole table is then built for the changed groups alone.
                let anchorRows = try anchor.materialize(context.scan)
                allAnchorRows = anchorRows
                let whole = try self.lookups(askedBy: nil, context)
                wholeLookups = whole
                let schedule = try GroupTable(stage: self, anchor: anchorRows, lookups: whole, context: context,
                                              scheduleOnly: true)
                let changed = try ChangedGroups.find(stage: self, groups: schedule, lookups: lookupChanges, changes: changes,
                                                     previousAsOf: previous.asOf, context: context)
                if changed.keys.count <= schedule.groupCount / Self.changedShareForFullRecompute {
                    return .relation(try recompute(changed, anchor: anchorRows, lookups: whole, events: events,
                                                   schedules: "every anchor row", context: context))
                }
                logRecomputingAll(changed, of: schedule.groupCount, context: context)
            }
        }
        let anchorRows = try allAnchorRows ?? anchor.materialize(context.scan)
        let lookups = try wholeLookups ?? self.lookups(askedBy: nil, context)
        let schema = try outputSchema(anchor: anchorRows.schema, lookups: lookups.mapValues(\.schema))
        var groups = try GroupTable(stage: self, anchor: anchorRows, lookups: lookups, context: context)
        try groups.aggregate(events: events, context: context)
        let output = try groups.output(schema: schema)
        context.metrics.produced(rows: output.count)
        return .relation(MaterializedRelation(output))
    }

    /// The lookups the stage asks, answering for the keys `anchor`'s rows ask
    /// (a lookup read by key reads only their rows), or for every key.
    private func lookups(askedBy anchor: Batch?, _ context: StageContext) throws -> [String: Lookup] {
        var asked: [String: Set<Int64>] = [:], whole: Set<String> = []
        for (input, key) in lookupUses {
            guard let anchor, key.count == 1, let position = anchor.schema.firstIndex(where: { $0.name == key[0] }),
                  anchor.columns[position].field.type.isInteger else {
                whole.insert(input)
                continue
            }
            let column = anchor.columns[position]
            var keys = asked[input] ?? []
            for row in 0..<anchor.count where !column.isNull(row) { keys.insert(column.ints[row]) }
            asked[input] = keys
        }
        var lookups: [String: Lookup] = [:]
        for (input, _) in lookupUses where lookups[input] == nil {
            lookups[input] = whole.contains(input) ? try context.lookup(input) : try context.lookup(input, keys: asked[input]!)
        }
        return lookups
    }

    /// The changed groups, found with the window ends the last run wrote
    /// (see `WindowCalendar`), and the number of groups, counted only as far
    /// as choosing between recomputing them and all needs; nil when that cannot
    /// be done: no persisted output with the dates the windows need, an
    /// anchor input that cannot be read by key, or a changed lookup that is
    /// not keyed by a group column.
    private func changedFromCalendar(_ changes: ChangedGroups.Inputs, previousAsOf: CivilDate, anchor: any Relation,
                                     lookups: [String: LookupChanges], context: StageContext) throws -> (ChangedGroups, Int)? {
        guard let previous = context.previousOutput, let table = previous.rows as? CopyRelation,
              let byKey = anchor as? any KeyRestrictable,
              let columns = WindowCalendar.columns(of: self, in: previous),
              let lookupChanges = ChangedGroups.GroupColumnChanges.of(stage: self, lookups: lookups) else { return nil }
        // Read on the server while the changes arrive.
        let reads = ChangedGroups.CalendarReads(
            closedSincePreviousAsOf: Prefetched.whole(table.filtered(WindowCalendar.closing(after: previousAsOf, by: asOf, stage: self),
                                                                     columns: columns), context: context.scan),
            byKey: { scope in ChangedGroups.Inputs.narrowed(table.restricted(to: scope), to: columns.map(\.name)) })
        guard let changed = try ChangedGroups.find(stage: self, calendar: reads, lookupChanges: lookupChanges, anchor: byKey,
                                                   changes: changes, previousAsOf: previousAsOf, context: context) else {
            context.logger.info("the persisted output is not one row per group with a start date; working out every group's schedule")
            return nil
        }
        // Only whether there are that many groups decides (a count of the
        // whole table would be the longest read of the stage).
        let enough = changed.keys.count * Self.changedShareForFullRecompute
        var groups = 0
        if enough > 0 {
            try table.counted(upTo: enough).scan(context.scan) { batch in groups += batch.count > 0 ? Int(batch.columns[0].ints[0]) : 0 }
        }
        return (changed, groups)
    }

    private func logRecomputingAll(_ changed: ChangedGroups, of groupCount: Int, context: StageContext) {
        context.logger.info("recomputing every group: more than 1/\(Self.changedShareForFullRecompute) of them changed, so one read of all events is cheaper than reading theirs by key", metadata: [
            "groups": .stringConvertible(changed.keys.count), "of": .stringConvertible(groupCount),
            "causes": .string(changed.causesText)])
    }

    /// The rows of the changed groups only: their events are read again in
    /// full, by key, from the source. `schedules` says where the window ends
    /// that found them came from, for the log.
    private func recompute(_ changed: ChangedGroups, anchor: Batch, lookups: [String: Lookup], events: any Relation,
                           schedules: String, context: StageContext) throws -> PartialRelation {
        let schema = try outputSchema(anchor: anchor.schema, lookups: lookups.mapValues(\.schema))
        let scope = changed.scope(columns: groupBy)
        var groups = try GroupTable(stage: self, anchor: anchor, lookups: lookups, context: context, keys: changed.keys)
        context.logger.info("recomputing changed groups", metadata: [
            "groups": .stringConvertible(scope.count),
            "causes": .string(changed.causesText),
            "schedules": .string(schedules)])
        if groups.groupCount > 0 {
            // Fetching a group's events is random access on the server; two
            // queries over halves of the groups keep both cores busy. Only
            // closed windows are output, and they end by as_of, so an event
            // dated as_of or later counts in none; no UTC offset reaches a
            // day, so every event from the day after as_of (UTC) on is one.
            let uncounted = (asOf.pgDays + 1) * PGTime.microsPerDay
            let restricted = (events as? any KeyRestrictable).map { events in
                ParallelUnion(scope.split(into: 2).map { events.restricted(to: $0, before: uncounted, in: eventTime) })
            } ?? events
            try groups.aggregate(events: restricted, context: context)
        }
        let output = try groups.output(schema: schema)
        context.metrics.produced(rows: output.count)
        return PartialRelation(rows: MaterializedRelation(output), scope: scope)
    }
}
