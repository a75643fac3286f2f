import Foundation
import Logging
import PipelineKit
import Stages
import XCTest

/// The shipped Dost pipeline against the independent SQL reference written
/// from the specification (sql/reference_warehouse.sql), on generated data
/// with every edge case.
/// The shipped Dost pipeline, its sample source and the SQL reference, shared by the integration tests.
enum Dost {
    static let tables: [(name: String, columns: String)] = [
        ("partnerorg", "id, name, provider_number"),
        ("programlist", "program_id, max_seq, lessons, duration_days"),
        ("userprogram_fact", """
            user_id, program_id, created_on, program_start, month1date, month3date, month5date, programenddate,
            partnerorg_id, month1_completed_lessons, month1_completed_minutes, month3_completed_lessons,
            month3_completed_minutes, eop_completed_lessons, eop_completed_minutes
            """),
        ("engagement_metric", """
            partnerorg_id, program_id, cohort_month, window_name, users, users_closed, avg_lessons, avg_minutes,
            high, medium, low, very_low
            """),
    ]

    nonisolated(unsafe) static var source: String?

    /// One sample source for the whole class: generating it is the slow part.
    static func sourceDatabase() throws -> String {
        if let source = source { return source }
        let source = try TestDatabase.createDatabase("dost_source")
        try TestDatabase.shell(["scripts/sample-data", "--url", source, "--users", "700", "--seed", "7"])
        Dost.source = source
        return source
    }

    /// The process environment with the Dost pipeline's connection variables set.
    static func environment(source: String, warehouse: String) -> [String: String] {
        var environment = ProcessInfo.processInfo.environment
        environment["DOST_SOURCE_URL"] = source
        environment["DOST_WAREHOUSE_URL"] = warehouse
        return environment
    }

    static func loadPipeline(source: String, warehouse: String, asOf: String, file: String = "pipelines/dost_warehouse.yaml",
                             variables: [(name: String, value: String)] = []) throws -> PipelineDefinition {
        try PipelineLoader(registry: .standard).load(
            path: TestDatabase.repositoryRoot.appendingPathComponent(file).path,
            options: LoadOptions(environment: environment(source: source, warehouse: warehouse), variableOverrides: variables,
                                 asOf: CivilDate(iso: asOf)))
    }

    /// Loads a pipeline given as text (a variant of the shipped one, say) through a temporary file.
    static func loadPipeline(yaml: String, source: String, warehouse: String, asOf: String = "2020-10-15") throws -> PipelineDefinition {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("pipeline-\(UUID().uuidString).yaml").path
        try yaml.write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        return try PipelineLoader(registry: .standard).load(
            path: path, options: LoadOptions(environment: environment(source: source, warehouse: warehouse), asOf: CivilDate(iso: asOf)))
    }

    static func run(_ pipeline: PipelineDefinition, fullRefresh: Bool = false, selecting selectors: [String] = [],
                    observers: [any RunObserver] = [], log: LineageLog? = nil, capturing: CapturedLog? = nil) async throws -> RunReport {
        var logger = capturing.map { captured in Logger(label: "test") { _ in captured.handler() } } ?? Logger(label: "test")
        if capturing == nil { logger.logLevel = .error }
        let executor = try PipelineExecutor(pipeline: pipeline, options: RunOptions(jobs: 2, selectors: selectors, fullRefresh: fullRefresh,
                                                                                    logger: logger, observers: observers, lineageLog: log,
                                                                                    sleep: { _ in }))
        return try await executor.run()
    }

    static func assertWarehouseEqualsReference(source: String, warehouse: String, asOf: String,
                                        file: StaticString = #filePath, line: UInt = #line) throws {
        let reference = try TestDatabase.connect(source)
        try reference.execute("SET ref.as_of = '\(asOf)'; SET ref.timezone = 'Asia/Kolkata'; SET ref.min_listen_secs = '30'")
        try reference.execute(String(contentsOf: TestDatabase.repositoryRoot.appendingPathComponent("sql/reference_warehouse.sql"), encoding: .utf8))
        let actual = try TestDatabase.connect(warehouse)
        for table in tables {
            let expected = try TestDatabase.rows(reference, "SELECT \(table.columns) FROM ref.\(table.name)")
            let got = try TestDatabase.rows(actual, "SELECT \(table.columns) FROM dw.\(table.name)")
            XCTAssertFalse(expected.isEmpty, "reference \(table.name) is empty", file: file, line: line)
            XCTAssertEqual(got.count, expected.count, "\(table.name) row count at as_of \(asOf)", file: file, line: line)
            let missing = Set(expected).subtracting(got), extra = Set(got).subtracting(expected)
            XCTAssertTrue(missing.isEmpty && extra.isEmpty,
                          "\(table.name) at as_of \(asOf): \(missing.count) expected rows missing (e.g. \(missing.sorted().prefix(3))), \(extra.count) unexpected (e.g. \(extra.sorted().prefix(3)))",
                          file: file, line: line)
        }
    }

    /// The shipped pipeline's text.
    static func yaml() throws -> String {
        try String(contentsOf: TestDatabase.repositoryRoot.appendingPathComponent("pipelines/dost_warehouse.yaml"), encoding: .utf8)
    }

    /// The shipped pipeline reading every call, also the unanswered ones its
    /// calls extract leaves in the database, so that they reach the window
    /// aggregate's own rule (event_null_time).
    static func yamlReadingUnansweredCalls() throws -> String {
        let yaml = try self.yaml().replacingOccurrences(of: Self.answeredCallsOnly, with: "")
        precondition(!yaml.contains("call_start_time IS NOT NULL"), "the calls extract of pipelines/dost_warehouse.yaml changed")
        return yaml
    }

    static let answeredCallsOnly = "      where: call_start_time IS NOT NULL\n"

    /// The shipped pipeline with a calls extract that pauses before streaming,
    /// so that a test can act on the COPY while it is open.
    static func yamlWithSlowCalls(pause seconds: Double) throws -> String {
        // A query cannot be tracked by id, and comparing an untracked extract
        // means reading it at the start of the run: this variant refreshes in full.
        let yaml = try self.yaml().replacingOccurrences(of: "      table: public.campaign\n", with: """
                  query: >-
                    SELECT user_id, program_id, listen_secs, call_start_time, programseq_id
                    FROM public.campaign, (SELECT pg_sleep(\(seconds))) AS pause
                    WHERE call_start_time IS NOT NULL

            """).replacingOccurrences(of: "      incremental: {tracking_key: id}\n", with: "")
            .replacingOccurrences(of: Self.answeredCallsOnly, with: "")
            .replacingOccurrences(of: "      parallel: 2\n", with: "")
        precondition(yaml.contains("pg_sleep"), "the calls extract of pipelines/dost_warehouse.yaml changed")
        return yaml
    }
}
