import Foundation
import PipelineKit

/// Builds a keyed lookup from an input, with declared key normalisation,
/// a duplicate-key rule and a default row for misses; optionally persists it.
public struct LookupBuild: Stage {
    public static let type = "lookupBuild"
    public static let summary = "Keyed lookup from an input: key normalisation, duplicate-key rule, default row for misses; optionally persisted as a warehouse table."
    public static let produces = OutputKind.lookup
    public static let configKeys: [ConfigKey] = [
        .required("from", .identifier, "the input whose rows make the lookup"),
        .required("key", .names, "the key column(s)"),
        .optional("normalize", .names, "steps applied to text keys before comparing: \(KeyNormalization.documentation)"),
        .optional("duplicates", .choice(["error", "first", "last", "all"]), "rule for rows sharing a key: error (default), first/last by order_by, or all (a multi-valued lookup)"),
        .optional("order_by", .identifier, "column ordering duplicates for first/last"),
        .optional("default", .dictionary(.any), "the row returned for keys that match nothing, column: value"),
        .optional("persist", .object(WriteTarget.configKeys + [
            .optional("include_default", .boolean, "also write the default row (default true)"),
        ]), "also write every input row to a warehouse table"),
    ]

    let from: String
    let key: [String]
    let normalization: KeyNormalization
    let duplicates: String
    let orderBy: String?
    let defaults: [(String, ConfigNode)]
    let persist: WriteTarget?
    let persistDefault: Bool

    public init(config: ConfigNode, build: StageBuild) throws {
        from = try build.input(config["from"], kind: .relation)
        key = config["key"]!.strings!
        var steps: [KeyNormalization.Step] = []
        for word in config["normalize"]?.strings ?? [] {
            guard let step = KeyNormalization.parse(word) else {
                build.error(at: config["normalize"]!, "unknown normalisation '\(word)'; use \(KeyNormalization.documentation)")
                throw StageBuild.Invalid()
            }
            steps.append(step)
        }
        normalization = KeyNormalization(steps: steps)
        duplicates = config["duplicates"]?.string ?? "error"
        orderBy = config["order_by"]?.string
        if (duplicates == "first" || duplicates == "last") && orderBy == nil {
            build.error(at: config["duplicates"]!, "duplicates: \(duplicates) needs 'order_by' to say which row comes first")
            throw StageBuild.Invalid()
        }
        defaults = config["default"]?.entries.map { ($0.key, $0.value) } ?? []
        persist = try config["persist"].map { try WriteTarget(config: $0, build: build) }
        persistDefault = config["persist"]?["include_default"]?.bool ?? true
        if let persist, persistDefault, let node = config["default"],
           let missing = persist.key.first(where: { name in !defaults.contains { $0.0 == name && !$0.1.isNull } }) {
            build.error(at: node, "the default row is also written to \(persist.table), but it has no value for the table's key '\(missing)'; give it one, or set persist.include_default: false")
            throw StageBuild.Invalid()
        }
    }

    /// A lookup holds its input's rows, with their columns.
    public func outputColumns(inputs: [String: [Field]]) throws -> [Field]? { inputs[from] }

    public func run(_ context: StageContext) throws -> StageOutput {
        let input = try context.completeRelation(from)
        let changed = try changedKeys(of: input, context: context)
        if let changed, let keyed = keyed(input, changedKeys: changed, stageID: context.stageID) {
            context.logger.info("incremental run: rows are read by key, as the stages using the lookup ask for them",
                                metadata: ["changed_keys": .stringConvertible(changed.count)])
            return .keyedLookup(keyed)
        }
        let rows = try input.materialize(context.scan)
        var lookup = try makeLookup(rows, metrics: context.metrics)
        lookup.changedKeys = changed
        if let persist {
            // Rows without a value for the table's key cannot be stored; they are counted instead.
            let keyPositions = try persist.key.map { try rows.require($0, in: "input '\(from)'") }
            var all = Batch(schema: rows.schema, capacity: rows.count + 1)
            var unkeyed = 0
            for row in 0..<rows.count {
                if keyPositions.contains(where: { rows.columns[$0].isNull(row) }) { unkeyed += 1; continue }
                all.append(row: rows.row(row))
            }
            context.metrics.exclude("null_table_key", count: unkeyed)
            if persistDefault, let row = lookup.defaultRow { all.append(row: row) }
            if context.isIncremental, Self.comparedWholeAndUnchanged(input) {
                // The last run wrote these very rows, and the refresh decision
                // found its table still the one it wrote.
                try persist.writeUnchanged(rows: all.count, columns: all.schema, context: context)
                context.logger.info("input unchanged since the last run; its table is not written again", metadata: ["table": .string(persist.table)])
            } else {
                _ = try persist.write(columns: all.schema, context: context, deleteMissing: true) { try $0(all) }
            }
        }
        context.metrics.produced(rows: rows.count)
        return .lookup(lookup)
    }

    /// An input whose rows were compared whole with the last run's (an
    /// untracked extract, by its digest) and found the same: an incremental
    /// run has them with no changes.
    static func comparedWholeAndUnchanged(_ input: any Relation) -> Bool {
        (input as? any ChangeTrackedRelation)?.changes is EmptyRelation
    }

    public var tablesWritten: [String] { persist.map { [$0.table] } ?? [] }

    public func restore(_ context: StageContext) throws -> StageOutput? {
        guard let persist, case .relation(let input)? = context.inputs[from] ?? nil else { return nil }
        var rows = try persist.read(columns: input.schema).materialize(context.scan)
        if persistDefault, !defaults.isEmpty {
            // The default row was written with the others; keep it out of the index.
            let defaultRow = try defaultRow(schema: rows.schema)
            let kept = (0..<rows.count).filter { rows.row($0) != defaultRow }
            var filtered = Batch(schema: rows.schema)
            kept.forEach { filtered.append(row: rows.row($0)) }
            rows = filtered
        }
        return .lookup(try makeLookup(rows, metrics: context.metrics))
    }

    /// The lookup read by key, when reading some keys' rows answers for them
    /// as reading every row would: a single integer key (nothing to
    /// normalise), no table to write every row to, an input that reads by key,
    /// and a duplicates rule that drops no row: `all`, or `error` on a key no
    /// two rows can share (a unique index), since the rows of a key read on
    /// their own cannot show that a key left unread has two.
    private func keyed(_ input: any Relation, changedKeys: Set<[Value]>, stageID: String) -> KeyedLookup? {
        guard persist == nil, key.count == 1,
              let field = input.schema.first(where: { $0.name == key[0] }), field.type.isInteger,
              duplicates == "all" || (duplicates == "error" && (input as? any UniquelyKeyed)?.uniqueColumns.contains(key[0]) == true),
              let byKey = input as? any KeyRestrictable else { return nil }
        return KeyedLookup(changedKeys: changedKeys) { keys, scan in
            let rows: Batch
            switch keys {
            case nil: rows = try input.materialize(scan)
            case let keys? where keys.isEmpty: rows = Batch(schema: input.schema)
            case let keys?: rows = try byKey.restricted(to: KeyScope(columns: key, first: keys.sorted())).materialize(scan)
            }
            // Read in the stage that asks: its rows are counted there, and so
            // are rows this lookup leaves out, under the lookup's name.
            var lookup = try makeLookup(rows, metrics: scan.metrics, rulePrefix: "\(stageID).")
            lookup.changedKeys = changedKeys
            return lookup
        }
    }

    /// In an incremental run, the keys of the input's new rows, so consumers
    /// recompute only what uses them; nil when the input cannot tell.
    private func changedKeys(of input: any Relation, context: StageContext) throws -> Set<[Value]>? {
        guard context.isIncremental, let tracked = input as? any ChangeTrackedRelation, let changes = tracked.changes else {
            return nil
        }
        var keys: Set<[Value]> = []
        try changes.scan(context.scan) { batch in
            let positions = try key.map { try batch.require($0, in: "changes of input '\(from)'") }
            for row in 0..<batch.count {
                if let normalised = normalization.apply(positions.map { batch.columns[$0].value(at: row) }) {
                    keys.insert(normalised)
                }
            }
        }
        return keys
    }

    private func makeLookup(_ rows: Batch, metrics: StageMetrics, rulePrefix: String = "") throws -> Lookup {
        let keyPositions = try key.map { try rows.require($0, in: "input '\(from)'") }
        let order = try orderBy.map { try rows.require($0, in: "input '\(from)'") }
        let index: Lookup.Index
        var nullKeys = 0, dropped = 0
        if keyPositions.count == 1, rows.columns[keyPositions[0]].field.type.storage == .int {
            // Integers need no normalising: rows are grouped by the integer itself.
            let column = rows.columns[keyPositions[0]]
            var first: [Int64: Int] = [:], more: [Int64: [Int]] = [:]
            first.reserveCapacity(rows.count)
            for row in 0..<rows.count {
                if column.isNull(row) { nullKeys += 1; continue }
                let value = column.ints[row]
                if first[value] == nil { first[value] = row } else { more[value, default: []].append(row) }
            }
            for (value, rest) in more {
                let kept = try keep([first[value]!] + rest, of: [.int(value)], rows, order: order)
                dropped += rest.count + 1 - kept.count
                first[value] = kept[0]
                more[value] = kept.count > 1 ? Array(kept.dropFirst()) : nil
            }
            index = .ints(first: first, more: more)
        } else {
            var byValues: [[Value]: [Int]] = [:]
            for row in 0..<rows.count {
                guard let normalised = normalization.apply(keyPositions.map { rows.columns[$0].value(at: row) }) else {
                    nullKeys += 1
                    continue
                }
                byValues[normalised, default: []].append(row)
            }
            for (entry, positions) in byValues where positions.count > 1 {
                let kept = try keep(positions, of: entry, rows, order: order)
                dropped += positions.count - kept.count
                byValues[entry] = kept
            }
            index = .values(byValues)
        }
        metrics.exclude(rulePrefix + "null_or_empty_key", count: nullKeys)
        metrics.exclude(rulePrefix + "duplicate_key", count: dropped)
        return Lookup(rows: rows, keyColumns: key, normalization: normalization, index: index,
                      defaultRow: defaults.isEmpty ? nil : try defaultRow(schema: rows.schema))
    }

    /// The rows kept of several sharing `entry`, by the duplicates rule.
    private func keep(_ positions: [Int], of entry: [Value], _ rows: Batch, order: Int?) throws -> [Int] {
        switch duplicates {
        case "error":
            throw StageFailure.data("\(positions.count) rows of '\(from)' share the key \(entry.map(\.description).joined(separator: ", ")) (rows \(positions.sorted().map { String($0 + 1) }.joined(separator: ", "))); set duplicates: first/last with order_by, or fix the source")
        case "first", "last":
            let column = rows.columns[order!]
            let sorted = positions.sorted { a, b in
                let (x, y) = (column.value(at: a), column.value(at: b))
                return x == y ? a < b : Value.sortsBefore(x, y)
            }
            return [duplicates == "first" ? sorted.first! : sorted.last!]
        default:
            return positions
        }
    }

    private func defaultRow(schema: [Field]) throws -> [Value] {
        var row = [Value](repeating: .null, count: schema.count)
        for (name, node) in defaults {
            guard let position = schema.firstIndex(where: { $0.name == name }) else {
                throw StageFailure.config("default names column '\(name)', which '\(from)' does not have")
            }
            guard let text = node.string else { continue }
            guard let value = schema[position].type.value(fromText: text) else {
                throw StageFailure.config("default \(name): '\(text)' is not a valid \(schema[position].type)")
            }
            row[position] = value
        }
        return row
    }
}
