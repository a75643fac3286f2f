import Foundation
import PipelineKit

/// Rolls an input up by dimensions into dashboard metrics, optionally
/// unpivoting several column groups into one name column first, and writes
/// the result with factUpsert's guarantees.
public struct MetricRollup: Stage {
    public static let type = "metricRollup"
    public static let summary = "Groups an input by dimensions with aggregates (count, count of non-NULL, rounded avg, counts per ratio level), optionally unpivoting column groups into one name column; written like factUpsert."
    public static let produces = OutputKind.table

    public static let configKeys: [ConfigKey] = [
        .required("from", .identifier, "the input to roll up"),
        .required("dimensions", .dictionary(.either([.identifier, .object([
            .required("column", .identifier, "input column"),
            .optional("truncate", .choice(["month", "year"]), "truncate a date column to the first day of its month or year"),
        ])])), "output dimension: input column, or {column, truncate}"),
        .optional("unpivot", .object([
            .required("name_column", .identifier, "output column holding the group's name"),
            .required("groups", .dictionary(.dictionary(.identifier)), "name → {field: input column}; each input row yields one row per group"),
        ]), "turn several column groups into rows"),
        .required("metrics", .dictionary(.object([
            .optional("count", .boolean, "rows in the group"),
            .optional("count_not_null", .identifier, "rows where this field is not NULL"),
            .optional("avg", .identifier, "average of the non-NULL values of this field"),
            .optional("scale", .integer(min: 0), "with avg: decimal places, rounded half away from zero (default 2)"),
        ])), "aggregates per group"),
        .optional("levels", .object([
            .required("numerator", .identifier, "integer field"),
            .required("denominator", .identifier, "integer field; rows where it is NULL or ≤ 0 get no level"),
            .required("thresholds", .dictionary(.string), "level column → lowest ratio as a fraction (e.g. high: 1/2 ... very_low: 0), highest first"),
        ]), "count rows per ratio level, compared exactly in integers"),
        .required("write", .object(WriteTarget.configKeys), "the warehouse table receiving the rollup"),
    ]

    struct Dimension: Sendable {
        let name: String
        let column: String
        let truncate: String?
    }

    enum Metric: Sendable {
        case count
        case countNotNull(String)
        case avg(String, scale: Int)
    }

    let from: String
    let dimensions: [Dimension]
    let unpivotColumn: String?
    let groups: [(name: String, fields: [String: String])]
    let metrics: [(name: String, metric: Metric)]
    let levels: (numerator: String, denominator: String, thresholds: [(name: String, p: Int64, q: Int64)])?
    let target: WriteTarget

    public init(config: ConfigNode, build: StageBuild) throws {
        from = try build.input(config["from"], kind: .relation)
        dimensions = config["dimensions"]!.entries.map { entry in
            Dimension(name: entry.key, column: entry.value.string ?? entry.value["column"]?.string ?? entry.key,
                      truncate: entry.value["truncate"]?.string)
        }
        unpivotColumn = config["unpivot"]?["name_column"]?.string
        groups = config["unpivot"]?["groups"]?.entries.map { entry in
            (entry.key, Dictionary(entry.value.entries.map { ($0.key, $0.value.string!) }, uniquingKeysWith: { a, _ in a }))
        } ?? []
        var metrics: [(String, Metric)] = []
        var failed = false
        for entry in config["metrics"]!.entries {
            let spec = entry.value
            let kinds = ["count", "count_not_null", "avg"].filter { spec[$0] != nil }
            guard kinds.count == 1 else {
                build.error(at: spec, "metric '\(entry.key)' needs exactly one of count, count_not_null, avg")
                failed = true
                continue
            }
            switch kinds[0] {
            case "count": metrics.append((entry.key, .count))
            case "count_not_null": metrics.append((entry.key, .countNotNull(spec["count_not_null"]!.string!)))
            default:
                let scale = spec["scale"]?.int ?? 2
                // The average is written as numeric(12, scale).
                guard scale <= 12 else {
                    build.error(at: spec["scale"]!, "metric '\(entry.key)': scale \(scale) is above 12, the most an average keeps")
                    failed = true
                    continue
                }
                metrics.append((entry.key, .avg(spec["avg"]!.string!, scale: scale)))
            }
        }
        self.metrics = metrics
        if let node = config["levels"] {
            var thresholds: [(String, Int64, Int64)] = []
            for entry in node["thresholds"]!.entries {
                guard let fraction = Self.fraction(entry.value.string ?? "") else {
                    build.error(at: entry.value, "threshold '\(entry.key)': '\(entry.value.string ?? "")' is not a fraction such as 1/2 or 0")
                    failed = true
                    continue
                }
                if let last = thresholds.last, Self.product(fraction.0, last.2) > Self.product(last.1, fraction.1) {
                    build.error(at: entry.value, "threshold '\(entry.key)' is higher than '\(last.0)'; list levels from highest to lowest")
                    failed = true
                }
                thresholds.append((entry.key, fraction.0, fraction.1))
            }
            levels = (node["numerator"]!.string!, node["denominator"]!.string!, thresholds)
        } else {
            levels = nil
        }
        target = try WriteTarget(config: config["write"]!, build: build)
        if failed { throw StageBuild.Invalid() }
    }

    static func fraction(_ text: String) -> (Int64, Int64)? {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
        guard let p = parts.first.flatMap({ Int64($0) }), p >= 0 else { return nil }
        guard parts.count == 2 else { return parts.count == 1 ? (p, 1) : nil }
        guard let q = Int64(parts[1]), q > 0 else { return nil }
        return (p, q)
    }

    /// The accumulators of every output row in flat arrays, so that adding a
    /// row mutates in place instead of copying per-row arrays. A row is added
    /// with sign 1 and taken away (an incremental run's old version) with -1.
    struct Accumulators {
        let metricCount: Int
        let levelCount: Int
        private(set) var keys: [[Value]] = []
        private var slots: [[Value]: Int] = [:]
        private(set) var count: [Int64] = []
        private(set) var notNull: [Int64] = []
        private(set) var sums: [Int64] = []
        private(set) var levelCounts: [Int64] = []

        init(metricCount: Int, levelCount: Int) {
            self.metricCount = metricCount
            self.levelCount = levelCount
        }

        /// The accumulator of `key`, new (at zero) if there is none yet; output keeps the order of creation.
        mutating func slot(for key: [Value]) -> Int {
            if let slot = slots[key] { return slot }
            let slot = keys.count
            slots[key] = slot
            keys.append(key)
            count.append(0)
            notNull += repeatElement(0, count: metricCount)
            sums += repeatElement(0, count: metricCount)
            levelCounts += repeatElement(0, count: levelCount)
            return slot
        }

        mutating func add(slot: Int, sign: Int64) { count[slot] += sign }
        mutating func addNotNull(slot: Int, metric: Int, sign: Int64) { notNull[slot * metricCount + metric] += sign }
        /// A non-NULL value of an averaged field; false when the sum no longer fits in 64 bits.
        mutating func add(slot: Int, metric: Int, value: Int64, sign: Int64) -> Bool {
            notNull[slot * metricCount + metric] += sign
            let (signed, flipped) = value.multipliedReportingOverflow(by: sign)
            let (sum, overflow) = sums[slot * metricCount + metric].addingReportingOverflow(signed)
            sums[slot * metricCount + metric] = sum
            return !overflow && !flipped
        }
        mutating func add(slot: Int, level: Int, sign: Int64) { levelCounts[slot * levelCount + level] += sign }

        /// Sets an accumulator to totals read back from the table.
        mutating func set(slot: Int, count: Int64, notNull: [Int64], sums: [Int64], levels: [Int64]) {
            self.count[slot] = count
            for metric in 0..<metricCount {
                self.notNull[slot * metricCount + metric] = notNull[metric]
                self.sums[slot * metricCount + metric] = sums[metric]
            }
            for level in 0..<levelCount { levelCounts[slot * levelCount + level] = levels[level] }
        }

        /// No count below zero: taking away rows never counted would leave one.
        var addsUp: Bool {
            !count.contains { $0 < 0 } && !notNull.contains { $0 < 0 } && !levelCounts.contains { $0 < 0 }
        }
    }

    /// The columns of the output for an input's columns, worked out and
    /// type-checked once per run.
    struct Shape {
        /// Dimensions, the unpivot name, metrics and levels.
        let fields: [Field]
        /// Exact totals kept with each row, from which an incremental run
        /// adjusts a row without reading the rows it sums: `_acc_rows`, and
        /// per average `_acc_<metric>_n` and `_acc_<metric>_sum` (at the
        /// averaged column's scale).
        let accumulators: [Field]
        /// Per average metric (by position): its input's scale and its own.
        let avgScales: [Int: (inScale: Int, outScale: Int)]

        var all: [Field] { fields + accumulators }
    }

    static let accumulatorPrefix = "_acc_"
    static let rowsTotal = accumulatorPrefix + "rows"
    static func countTotal(of metric: String) -> String { "\(accumulatorPrefix)\(metric)_n" }
    static func sumTotal(of metric: String) -> String { "\(accumulatorPrefix)\(metric)_sum" }

    private var unpivoted: [(name: String?, fields: [String: String])] {
        groups.isEmpty ? [(nil, [:])] : groups.map { ($0.name, $0.fields) }
    }

    public func run(_ context: StageContext) throws -> StageOutput {
        let input = try context.completeRelation(from)
        if context.isIncremental, let replaced = input as? ReplacedRows, let output = try rollupChanged(replaced, context) {
            return output
        }
        let output = try rollupWithTotals(try input.materialize(context.scan))
        _ = try target.write(columns: output.schema, context: context, deleteMissing: true,
                             addable: accumulatorNames(output.schema)) { try $0(output) }
        context.metrics.produced(rows: output.count)
        return .table(name: target.table, relation: target.read(columns: output.schema))
    }

    /// An incremental run: only the dimension groups (cells) that a replaced
    /// row left or joined are rolled up again and rewritten; a cell left empty
    /// is deleted. nil when a changed cell has a NULL dimension, which a
    /// scoped write cannot address (then everything is rolled up).
    private func rollupChanged(_ replaced: ReplacedRows, _ context: StageContext) throws -> StageOutput? {
        var truncated = [[Int64: Int64]](repeating: [:], count: dimensions.count)
        var cells: Set<[Value]> = []
        for batch in [replaced.before, replaced.after] {
            let columns = try dimensionColumns(of: batch)
            for row in 0..<batch.count { cells.insert(try cell(columns, row, &truncated)) }
        }
        if cells.contains(where: { $0.contains(.null) }) { return nil }
        let ordered = cells.sorted { $0.lexicographicallyPrecedes($1, by: Value.sortsBefore) }
        let output: Batch
        let how: String
        // A retry re-reads: an earlier attempt may have committed the adjusted
        // totals before its acknowledgement was lost, and adjusting them again
        // would count the replaced rows twice.
        if context.attempt == 1, let adjusted = try adjustStored(ordered, replaced, context) {
            output = adjusted
            how = "stored totals adjusted by the replaced rows"
        } else {
            how = "their rows read again"
            // The server sends only the rows of changed cells when it can select
            // them; otherwise they are picked out here.
            let inCells: Batch
            if let copy = replaced.table as? CopyRelation, let predicate = cellPredicate(ordered, schema: copy.schema) {
                let used = copy.schema.filter { inputColumns.contains($0.name) }
                inCells = try copy.filtered(predicate, columns: used).materialize(context.scan)
            } else {
                let all = try replaced.table.materialize(context.scan)
                let columns = try dimensionColumns(of: all)
                var picked = Batch(schema: all.schema)
                for row in 0..<all.count where cells.contains(try cell(columns, row, &truncated)) { picked.append(row: all.row(row)) }
                inCells = picked
            }
            output = try rollupWithTotals(inCells)
        }
        var scope = Batch(schema: Array(output.schema.prefix(dimensions.count)))
        for key in ordered { scope.append(row: key) }
        _ = try target.write(columns: output.schema, context: context, deleteMissing: true, scope: scope,
                             addable: accumulatorNames(output.schema)) { try $0(output) }
        context.metrics.produced(rows: output.count)
        context.logger.info("rolled up changed cells", metadata: ["cells": .stringConvertible(cells.count), "from": .string(how)])
        return .table(name: target.table, relation: target.read(columns: output.schema))
    }

    private func accumulatorNames(_ schema: [Field]) -> Set<String> {
        Set(schema.map(\.name).filter { $0.hasPrefix(Self.accumulatorPrefix) })
    }

    /// The changed cells' rows worked out from the totals stored with them,
    /// less the replaced rows' old versions, plus their new ones: a few
    /// hundred stored rows read instead of every fact row of those cells.
    /// nil when that cannot be done: totals not stored (a table written
    /// before they were kept, or a cell last written then), or totals that
    /// do not add up with the replaced rows (a table changed by hand).
    private func adjustStored(_ cells: [[Value]], _ replaced: ReplacedRows, _ context: StageContext) throws -> Batch? {
        let shape = try shape(of: replaced.table.schema)
        guard let predicate = cellPredicate(cells, schema: shape.fields, stored: true) else { return nil }
        let stored: Batch
        do {
            stored = try target.read(columns: shape.all).filtered(predicate).materialize(context.scan)
        } catch let error as PGError where error.sqlState == "42703" {
            return nil  // an accumulator column the table does not have yet; the write adds it
        }
        var accumulators = emptyAccumulators
        let keyWidth = dimensions.count + (unpivotColumn == nil ? 0 : 1)
        let rowsColumn = stored.columns[try stored.require(Self.rowsTotal, in: target.table)]
        let levelColumns = try (levels?.thresholds ?? []).map { stored.columns[try stored.require($0.name, in: target.table)] }
        let metricColumns = try metrics.map { name, metric -> (n: Column?, sum: Column?) in
            switch metric {
            case .count: (nil, nil)
            case .countNotNull: (stored.columns[try stored.require(name, in: target.table)], nil)
            case .avg: (stored.columns[try stored.require(Self.countTotal(of: name), in: target.table)],
                        stored.columns[try stored.require(Self.sumTotal(of: name), in: target.table)])
            }
        }
        for row in 0..<stored.count {
            guard !rowsColumn.isNull(row), !levelColumns.contains(where: { $0.isNull(row) }),
                  !metricColumns.contains(where: { ($0.n?.isNull(row) ?? false) || ($0.sum?.isNull(row) ?? false) }) else { return nil }
            let slot = accumulators.slot(for: (0..<keyWidth).map { stored.columns[$0].value(at: row) })
            accumulators.set(slot: slot, count: rowsColumn.ints[row],
                             notNull: metricColumns.map { $0.n?.ints[row] ?? 0 }, sums: metricColumns.map { $0.sum?.ints[row] ?? 0 },
                             levels: levelColumns.map { $0.ints[row] })
        }
        try accumulate(replaced.before, shape: shape, into: &accumulators, sign: -1)
        try accumulate(replaced.after, shape: shape, into: &accumulators, sign: 1)
        guard accumulators.addsUp else {
            context.logger.warning("the totals stored in \(target.table) do not add up with the fact rows replaced (was the table changed by hand?); rolling the changed cells up from their rows instead")
            return nil
        }
        return try output(accumulators, shape: shape)
    }

    /// Every input column the rollup may read: dimensions, unpivoted columns,
    /// metric and level columns (names that are unpivot names match none).
    var inputColumns: Set<String> {
        var names = Set(dimensions.map(\.column))
        for group in groups { names.formUnion(group.fields.values) }
        for (_, metric) in metrics {
            switch metric {
            case .count: break
            case .countNotNull(let column), .avg(let column, _): names.insert(column)
            }
        }
        if let levels { names.formUnion([levels.numerator, levels.denominator]) }
        return names
    }

    /// SQL selecting the rows of `cells` (dimension values, dates truncated)
    /// from rows of `schema`; nil when a dimension's type has no literal form here.
    /// With `stored`, the rows are the output's: dimensions by their output
    /// names, dates already truncated.
    func cellPredicate(_ cells: [[Value]], schema: [Field], stored: Bool = false) -> String? {
        guard !cells.isEmpty else { return "false" }
        let types = dimensions.map { dimension in schema.first { $0.name == (stored ? dimension.name : dimension.column) }?.type }
        guard types.allSatisfy({ [.smallint, .int, .bigint, .date, .text].contains($0) }) else { return nil }
        // Truncated in date arithmetic: date_trunc would go through timestamptz and the session's zone.
        let columns = dimensions.map { dimension in
            if stored { return SQL.ident(dimension.name) }
            let column = SQL.ident(dimension.column)
            switch dimension.truncate {
            // An infinite date is its own cell, and has no year to make a date of.
            case "month"?: return "(CASE WHEN isfinite(\(column)) THEN \(column) - (extract(day FROM \(column))::int - 1) ELSE \(column) END)"
            case "year"?: return "(CASE WHEN isfinite(\(column)) THEN make_date(extract(year FROM \(column))::int, 1, 1) ELSE \(column) END)"
            default: return column
            }
        }
        var tuples: [String] = []
        for cell in cells {
            var literals: [String] = []
            for (index, value) in cell.enumerated() {
                switch value {
                case .int(let number):
                    guard types[index] == .date else { literals.append(String(number)); continue }
                    // An infinite date has no month to select by.
                    guard number != PGTime.infiniteDate && number != PGTime.minusInfiniteDate else { return nil }
                    literals.append("'\(CivilDate(pgDays: number))'::date")
                case .text(let text): literals.append(SQL.literal(text))
                case .double, .null: return nil
                }
            }
            tuples.append("(\(literals.joined(separator: ", ")))")
        }
        // IN (VALUES ...) is planned as a hash join, not one comparison per cell and row.
        return "(\(columns.joined(separator: ", "))) IN (VALUES \(tuples.joined(separator: ", ")))"
    }

    private func dimensionColumns(of batch: Batch) throws -> [Column] {
        try dimensions.map { batch.columns[try batch.require($0.column, in: "input '\(from)'")] }
    }

    /// A row's dimension values, dates truncated as declared (each distinct date
    /// once per dimension: two dimensions may truncate one column differently).
    private func cell(_ columns: [Column], _ row: Int, _ truncated: inout [[Int64: Int64]]) throws -> [Value] {
        try dimensions.indices.map { index in
            let value = columns[index].value(at: row)
            guard let truncate = dimensions[index].truncate, case .int(let day) = value,
                  day != PGTime.infiniteDate, day != PGTime.minusInfiniteDate else { return value }
            if let first = truncated[index][day] { return .int(first) }
            guard PGTime.finiteDays.contains(day) else {
                throw StageFailure.data("dimension '\(dimensions[index].name)': day \(day) of '\(dimensions[index].column)' is beyond PostgreSQL's dates")
            }
            let date = CivilDate(pgDays: day)
            let first = (truncate == "month" ? date.firstOfMonth : CivilDate(year: date.year, month: 1, day: 1)).pgDays
            truncated[index][day] = first
            return .int(first)
        }
    }

    /// The rollup itself, without writing: one row per dimension group (and unpivot name).
    func rollup(_ input: Batch) throws -> Batch {
        let shape = try shape(of: input.schema)
        return try rolledUp(input, shape: shape).projected(to: shape.fields)
    }

    /// The rollup as written: each row followed by the exact totals it was worked out from.
    func rollupWithTotals(_ input: Batch) throws -> Batch {
        try rolledUp(input, shape: try shape(of: input.schema))
    }

    private func rolledUp(_ input: Batch, shape: Shape) throws -> Batch {
        var accumulators = emptyAccumulators
        try accumulate(input, shape: shape, into: &accumulators, sign: 1)
        return try output(accumulators, shape: shape)
    }

    var emptyAccumulators: Accumulators { Accumulators(metricCount: metrics.count, levelCount: levels?.thresholds.count ?? 0) }

    func shape(of input: [Field]) throws -> Shape {
        let what = "input '\(from)'"
        func field(_ name: String, _ group: [String: String]) throws -> Field {
            try requireField(group[name] ?? name, in: input, of: what)
        }
        var outputFields = try dimensions.map { dimension -> Field in
            let type = try requireField(dimension.column, in: input, of: what).type
            if dimension.truncate != nil && type != .date {
                throw StageFailure.config("dimension '\(dimension.name)': truncate needs a date column, '\(dimension.column)' is \(type)")
            }
            return Field(dimension.name, type)
        }
        if let unpivotColumn { outputFields.append(Field(unpivotColumn, .text)) }
        /// The type of `name` in every unpivot group, which must agree: one
        /// output column holds them all, computed at one scale.
        func exactType(_ name: String, for purpose: String) throws -> DataType {
            var found: DataType?
            for (groupName, fields) in unpivoted {
                let type = try field(name, fields).type
                guard type.isExactNumber else {
                    throw StageFailure.config("\(purpose) needs an integer or numeric column, '\(fields[name] ?? name)' is \(type)")
                }
                if let found, found.scale != type.scale {
                    throw StageFailure.config("\(purpose): '\(name)' is \(found) in one unpivot group but \(type) in group '\(groupName ?? "")'; the groups must agree")
                }
                found = found ?? type
            }
            return found!
        }
        var avgScales: [Int: (inScale: Int, outScale: Int)] = [:]
        var accumulatorFields = [Field(Self.rowsTotal, .bigint)]
        for (index, (name, metric)) in metrics.enumerated() {
            switch metric {
            case .count, .countNotNull: outputFields.append(Field(name, .int))
            case .avg(let averaged, let scale):
                let inScale = try exactType(averaged, for: "metric '\(name)': avg").scale
                avgScales[index] = (inScale, scale)
                outputFields.append(Field(name, .numeric(precision: 12, scale: scale)))
                accumulatorFields += [Field(Self.countTotal(of: name), .bigint),
                                      Field(Self.sumTotal(of: name), .numeric(precision: 18, scale: inScale))]
            }
        }
        if let levels {
            // A ratio of scaled integers is exact only when both share the scale.
            let numerator = try exactType(levels.numerator, for: "levels: numerator")
            let denominator = try exactType(levels.denominator, for: "levels: denominator")
            guard numerator.scale == denominator.scale else {
                throw StageFailure.config("levels: numerator '\(levels.numerator)' is \(numerator) but denominator '\(levels.denominator)' is \(denominator); give them the same scale")
            }
        }
        for level in levels?.thresholds ?? [] { outputFields.append(Field(level.name, .int)) }
        return Shape(fields: outputFields, accumulators: accumulatorFields, avgScales: avgScales)
    }

    /// Adds the rows of `input` to their accumulators (`sign` -1 takes them away).
    func accumulate(_ input: Batch, shape: Shape, into accumulators: inout Accumulators, sign: Int64) throws {
        let what = "input '\(from)'"
        func column(_ field: String, _ group: [String: String]) throws -> Column {
            input.columns[try input.require(group[field] ?? field, in: what)]
        }
        let dimensionColumns = try dimensionColumns(of: input)
        let unpivoted = self.unpivoted
        // Truncating a date to its month or year once per distinct date, not per row.
        var truncated = [[Int64: Int64]](repeating: [:], count: dimensions.count)
        // Each row's cell is found once, not once per unpivoted group; a
        // (cell, group) accumulator is then found by arithmetic.
        var cells: [[Value]] = [], cellOf = [Int](repeating: 0, count: input.count)
        var cellPosition: [[Value]: Int] = [:]
        for row in 0..<input.count {
            let key = try cell(dimensionColumns, row, &truncated)
            if let known = cellPosition[key] {
                cellOf[row] = known
            } else {
                cellOf[row] = cells.count
                cellPosition[key] = cells.count
                cells.append(key)
            }
        }
        var slotOf = [Int](repeating: -1, count: cells.count * unpivoted.count)
        for (g, (groupName, fields)) in unpivoted.enumerated() {
            let metricColumns: [Column?] = try metrics.map { _, metric in
                switch metric {
                case .count: nil
                case .countNotNull(let field), .avg(let field, _): try column(field, fields)
                }
            }
            // Plain arrays, bound once: binding a Column (or copying it) per row
            // retains and releases each of its arrays.
            let measured = metricColumns.indices.filter { metricColumns[$0] != nil }
            // Only an average adds values up (of exact numbers); count_not_null counts any type's non-NULLs.
            let summed = measured.map { if case .avg = metrics[$0].metric { true } else { false } }
            let values = measured.map { metricColumns[$0]!.ints }, nulls = measured.map { metricColumns[$0]!.nulls }
            let ratio = try levels.map { levels in
                let (numerator, denominator) = (try column(levels.numerator, fields), try column(levels.denominator, fields))
                return (n: numerator.ints, nNulls: numerator.nulls, d: denominator.ints, dNulls: denominator.nulls,
                        thresholds: levels.thresholds)
            }
            for row in 0..<input.count {
                let at = cellOf[row] * unpivoted.count + g
                if slotOf[at] < 0 { slotOf[at] = accumulators.slot(for: cells[cellOf[row]] + (groupName.map { [.text($0)] } ?? [])) }
                let slot = slotOf[at]
                accumulators.add(slot: slot, sign: sign)
                for (k, index) in measured.enumerated() where nulls[k].isEmpty || !nulls[k][row] {
                    guard summed[k] else {
                        accumulators.addNotNull(slot: slot, metric: index, sign: sign)
                        continue
                    }
                    guard accumulators.add(slot: slot, metric: index, value: values[k][row], sign: sign) else {
                        throw StageFailure.data("metric '\(metrics[index].name)': the sum of '\(metricColumns[index]!.field.name)' over one group does not fit in 64 bits")
                    }
                }
                if let ratio, ratio.nNulls.isEmpty || !ratio.nNulls[row], ratio.dNulls.isEmpty || !ratio.dNulls[row],
                   ratio.d[row] > 0 {
                    let (n, d) = (ratio.n[row], ratio.d[row])
                    // n/d ≥ p/q ⇔ n·q ≥ p·d, exact in 128-bit products.
                    if let level = ratio.thresholds.firstIndex(where: { Self.product(n, $0.q) >= Self.product($0.p, d) }) {
                        accumulators.add(slot: slot, level: level, sign: sign)
                    }
                }
            }
        }
    }

    /// One row per accumulator that counts rows: one left with none is a
    /// group that no longer exists.
    func output(_ accumulators: Accumulators, shape: Shape) throws -> Batch {
        var output = Batch(schema: shape.all, capacity: accumulators.keys.count)
        let (metricCount, levelCount) = (accumulators.metricCount, accumulators.levelCount)
        for (slot, key) in accumulators.keys.enumerated() where accumulators.count[slot] > 0 {
            var row = key
            var totals: [Value] = [.int(accumulators.count[slot])]
            for (index, (_, metric)) in metrics.enumerated() {
                let n = accumulators.notNull[slot * metricCount + index]
                switch metric {
                case .count: row.append(.int(accumulators.count[slot]))
                case .countNotNull: row.append(.int(n))
                case .avg:
                    let sum = accumulators.sums[slot * metricCount + index]
                    totals += [.int(n), .int(sum)]
                    guard n > 0, let scales = shape.avgScales[index] else { row.append(.null); continue }
                    let shift = scales.outScale - scales.inScale
                    let (scaled, overflow) = shift >= 0
                        ? sum.multipliedReportingOverflow(by: Int64.pow10(shift))
                        : n.multipliedReportingOverflow(by: Int64.pow10(-shift))
                    guard !overflow else {
                        throw StageFailure.data("metric '\(metrics[index].name)': an average at scale \(scales.outScale) does not fit in 64 bits; lower its scale")
                    }
                    row.append(.int(shift >= 0 ? Rounding.divide(scaled, by: n) : Rounding.divide(sum, by: scaled)))
                }
            }
            row += accumulators.levelCounts[(slot * levelCount)..<((slot + 1) * levelCount)].map(Value.int)
            output.append(row: row + totals)
        }
        return output
    }

    /// a·b as a 128-bit number, (high, low), which orders like the product.
    static func product(_ a: Int64, _ b: Int64) -> (Int64, UInt64) { a.multipliedFullWidth(by: b) }

    public func restore(_ context: StageContext) throws -> StageOutput? { nil }

    public var tablesWritten: [String] { [target.table] }
}
