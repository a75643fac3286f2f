import Foundation
import Logging
@testable import PipelineKit
@testable import Stages
import XCTest
import Yams

/// Helpers for stage-level unit tests: in-memory inputs, a stage built from a
/// YAML config, and a StageContext without any database connection.
///
/// Instants and dates are computed here with Foundation's calendar, not with
/// PipelineKit's own CivilDate/PGTime arithmetic, so that the expected values
/// are independent of the code under test.
enum UnitFixture {
    static let postgresEpoch: TimeInterval = 946_684_800

    static let utcCalendar: Calendar = {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        return calendar
    }()

    /// Microseconds since 2000-01-01 00:00 UTC of a UTC wall-clock instant.
    static func micros(_ year: Int, _ month: Int, _ day: Int, _ hour: Int = 0, _ minute: Int = 0, _ second: Int = 0,
                       micro: Int64 = 0) -> Int64 {
        let date = utcCalendar.date(from: DateComponents(year: year, month: month, day: day,
                                                         hour: hour, minute: minute, second: second))!
        return Int64((date.timeIntervalSince1970 - postgresEpoch).rounded()) * 1_000_000 + micro
    }

    /// Days since 2000-01-01 of a calendar date.
    static func day(_ year: Int, _ month: Int, _ day: Int) -> Int64 {
        let date = utcCalendar.date(from: DateComponents(year: year, month: month, day: day))!
        return Int64(((date.timeIntervalSince1970 - postgresEpoch) / 86_400).rounded())
    }

    // MARK: data

    static func batch(_ fields: [Field], _ rows: [[Value]]) -> Batch {
        var batch = Batch(schema: fields)
        for row in rows { batch.append(row: row) }
        return batch
    }

    static func relation(_ fields: [Field], _ rows: [[Value]]) -> StageOutput {
        .relation(MaterializedRelation(batch(fields, rows)))
    }

    /// A lookup built directly (not through lookupBuild): every row indexed
    /// under its normalised key, in input order.
    static func lookup(_ fields: [Field], _ rows: [[Value]], key: [String],
                       normalization: KeyNormalization = .none, defaultRow: [Value]? = nil) -> StageOutput {
        let rows = batch(fields, rows)
        let positions = key.map { rows.index(of: $0)! }
        var index: [[Value]: [Int]] = [:]
        for row in 0..<rows.count {
            guard let normalised = normalization.apply(positions.map { rows.columns[$0].value(at: row) }) else { continue }
            index[normalised, default: []].append(row)
        }
        return .lookup(Lookup(rows: rows, keyColumns: key, normalization: normalization, index: index, defaultRow: defaultRow))
    }

    // MARK: config and build

    static func config(_ yaml: String) throws -> ConfigNode {
        guard let node = try Yams.compose(yaml: yaml) else {
            throw StageFailure.config("empty YAML")
        }
        return ConfigNode(node, path: "config")
    }

    static func build(_ stageID: String, inputs: [String: OutputKind],
                      connections: [String: Bool] = [:]) -> (StageBuild, DiagnosticSink) {
        let sink = DiagnosticSink(file: "unit-test.yaml")
        let build = StageBuild(stageID: stageID, sink: sink, inputs: inputs,
                               connections: Set(connections.keys), connectionModes: connections)
        return (build, sink)
    }

    /// Builds a stage; fails the test with the diagnostics when it cannot be built.
    static func make<S: Stage>(_ type: S.Type, _ stageID: String, yaml: String, inputs: [String: OutputKind],
                               connections: [String: Bool] = [:],
                               file: StaticString = #filePath, line: UInt = #line) throws -> S {
        let (build, sink) = build(stageID, inputs: inputs, connections: connections)
        do {
            let stage = try S(config: try config(yaml), build: build)
            XCTAssertEqual(sink.diagnostics.map(\.message), [], "unexpected diagnostics", file: file, line: line)
            return stage
        } catch {
            XCTFail("cannot build \(S.type): \(error); diagnostics: \(sink.diagnostics.map(\.description))", file: file, line: line)
            throw error
        }
    }

    // MARK: context

    static func context(stageID: String, inputs: [String: StageOutput], asOf: CivilDate = CivilDate(year: 2030, month: 1, day: 1),
                        metrics: StageMetrics = StageMetrics(), connections: [String: ConnectionDefinition] = [:]) -> StageContext {
        let cancellation = Cancellation()
        return StageContext(
            pipelineName: "unit",
            runID: UUID(),
            stageID: stageID,
            attempt: 1,
            logger: Logger(label: "unit.\(stageID)"),
            variables: [:],
            asOf: asOf,
            fullRefresh: false,
            inputs: inputs,
            connections: ConnectionProvider(pipelineName: "unit", stageID: stageID, definitions: connections, cancellation: cancellation),
            cancellation: cancellation,
            metrics: metrics)
    }

    static func scanContext() -> ScanContext {
        let cancellation = Cancellation()
        return ScanContext(connections: ConnectionProvider(pipelineName: "unit", stageID: "scan", definitions: [:],
                                                           cancellation: cancellation),
                           cancellation: cancellation, metrics: StageMetrics())
    }

    /// Runs a stage expected to produce rows and materialises them.
    static func rows(of output: StageOutput) throws -> Batch {
        switch output {
        case .relation(let relation), .table(_, let relation): return try relation.materialize(scanContext())
        case .lookup, .keyedLookup: throw StageFailure.config("expected rows, got a lookup")
        }
    }

    static func lookup(of output: StageOutput) throws -> Lookup {
        guard case .lookup(let lookup) = output else { throw StageFailure.config("expected a lookup, got \(output.kind)") }
        return lookup
    }
}

/// A relation delivered in several batches, to exercise state kept across batches.
struct MultiBatchRelation: Relation {
    let batches: [Batch]
    var schema: [Field] { batches[0].schema }
    func scan(_ context: ScanContext, _ body: (Batch) throws -> Void) throws {
        for batch in batches {
            try context.cancellation.check()
            context.metrics.read(rows: batch.count)
            try body(batch)
        }
    }
}

extension Batch {
    /// The value of a named column; traps on a misspelt name so tests fail loudly.
    func cell(_ row: Int, _ name: String) -> Value {
        guard let column = column(name) else { preconditionFailure("no column \(name) in \(schema.map(\.name))") }
        return column.value(at: row)
    }

    /// The first row whose integer key columns equal the given values.
    func rowMatching(_ key: [String: Int64]) -> Int? {
        (0..<count).first { row in key.allSatisfy { cell(row, $0.key) == .int($0.value) } }
    }
}
