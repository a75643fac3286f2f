import Foundation
import XCTest
@testable import PipelineKit

/// Scheduling, failure propagation and retries, with test-only stage types and
/// no connections (so no run lock and no PostgreSQL).
final class ExecutorTests: XCTestCase {
    /// A prefix that keeps this test's scripts apart from other tests'.
    private let tag = "t" + UUID().uuidString.replacingOccurrences(of: "-", with: "").prefix(12).lowercased()

    private func script(_ name: String, _ body: @escaping Scripts.Body) -> String {
        let key = "\(tag)_\(name)"
        Scripts.shared.register(key, body)
        return key
    }

    /// A pipeline of scripted stages; `stages` is (id, inputs, script key or nil) in file order.
    private func pipeline(_ stages: [(String, [String], String?)], extra: String = "") throws -> PipelineDefinition {
        var text = "pipeline: exec\n\(extra)stages:\n"
        for (id, inputs, script) in stages {
            text += "  - id: \(id)\n    type: scripted\n"
            if !inputs.isEmpty { text += "    inputs: [\(inputs.joined(separator: ", "))]\n" }
            if let script { text += "    config: {script: \(script)}\n" }
        }
        return try loadPipeline(text, registry: testRegistry)
    }

    private final class Recorder: RunObserver, @unchecked Sendable {
        let events = Locked<[String]>([])
        func stageStarted(_ run: RunInfo, stage: StageDefinition, attempt: Int) {
            events.withLock { $0.append("start \(stage.id) #\(attempt)") }
        }
        func stageRetrying(_ run: RunInfo, stage: StageDefinition, attempt: Int, error: Error, delay: Double) {
            events.withLock { $0.append("retry \(stage.id) #\(attempt) after \(delay)") }
        }
        func stageFinished(_ run: RunInfo, report: StageReport) {
            events.withLock { $0.append("finish \(report.id) \(report.status.rawValue)") }
        }
        func runFinished(_ run: RunInfo, report: RunReport) {
            events.withLock { $0.append("run \(report.status.rawValue)") }
        }
    }

    /// Sleeps recorded instead of waited; random numbers handed out from a fixed value.
    private struct Clock {
        let sleeps = Locked<[Double]>([])
        let randomCalls = Locked(0)
        func options(jobs: Int, random: Double = 0.5, observers: [any RunObserver] = []) -> RunOptions {
            let sleeps = self.sleeps, randomCalls = self.randomCalls
            return RunOptions(jobs: jobs, observers: observers,
                              sleep: { seconds in sleeps.withLock { $0.append(seconds) } },
                              random: { randomCalls.withLock { $0 += 1 }; return random })
        }
    }

    private func run(_ pipeline: PipelineDefinition, _ options: RunOptions) async throws -> RunReport {
        try await PipelineExecutor(pipeline: pipeline, options: options).run()
    }

    // MARK: (a) concurrency

    /// Counts stages in flight. `barrier` holds each stage until that many
    /// stages have arrived (or `timeout` passes), so overlap is proven, not hoped
    /// for; `hold` keeps a stage running afterwards so extra concurrency would show.
    private final class Overlap: @unchecked Sendable {
        let arrived = Locked(0)
        let inFlight = Locked(0)
        let maximum = Locked(0)
        let timedOut = Locked(false)

        func body(barrier: Int = 0, timeout: TimeInterval = 5, hold: TimeInterval) -> Scripts.Body {
            { [self] _ in
                arrived.withLock { $0 += 1 }
                let now = inFlight.withLock { $0 += 1; return $0 }
                maximum.withLock { $0 = max($0, now) }
                defer { inFlight.withLock { $0 -= 1 } }
                let deadline = Date().addingTimeInterval(timeout)
                while arrived.current < barrier {
                    if Date() > deadline { timedOut.withLock { $0 = true }; break }
                    Thread.sleep(forTimeInterval: 0.001)
                }
                Thread.sleep(forTimeInterval: hold)
            }
        }
    }

    func testIndependentStagesRunAtTheSameTimeWithTwoJobs() async throws {
        let overlap = Overlap()
        let key = script("barrier", overlap.body(barrier: 2, hold: 0))
        let pipeline = try pipeline([("left", [], key), ("right", [], key)])
        let report = try await run(pipeline, Clock().options(jobs: 2))
        XCTAssertEqual(report.status, .succeeded)
        XCTAssertEqual(report.stages.map(\.status), [.succeeded, .succeeded])
        XCTAssertFalse(overlap.timedOut.current, "the two stages never ran at the same time")
        XCTAssertEqual(overlap.maximum.current, 2)
    }

    func testWithOneJobStagesRunOneAtATimeInPlanOrder() async throws {
        let overlap = Overlap()
        let order = Locked<[String]>([])
        let body = overlap.body(hold: 0.05)
        let key = script("count") { context in
            order.withLock { $0.append(context.stageID) }
            try body(context)
        }
        let pipeline = try pipeline([("s1", [], key), ("s2", [], key), ("s3", [], key), ("s4", [], key)])
        let report = try await run(pipeline, Clock().options(jobs: 1))
        XCTAssertEqual(report.status, .succeeded)
        XCTAssertEqual(overlap.maximum.current, 1, "jobs 1 ran stages concurrently")
        XCTAssertEqual(order.current, ["s1", "s2", "s3", "s4"])
        XCTAssertEqual(report.stages.map(\.id), ["s1", "s2", "s3", "s4"])
    }

    func testNeverMoreThanTwoOfFourIndependentStagesRunAtOnceWithTwoJobs() async throws {
        let overlap = Overlap()
        let key = script("count", overlap.body(barrier: 2, hold: 0.05))
        let pipeline = try pipeline([("s1", [], key), ("s2", [], key), ("s3", [], key), ("s4", [], key)])
        let report = try await run(pipeline, Clock().options(jobs: 2))
        XCTAssertEqual(report.status, .succeeded)
        XCTAssertFalse(overlap.timedOut.current)
        XCTAssertEqual(overlap.maximum.current, 2)
        XCTAssertEqual(overlap.arrived.current, 4)
    }

    func testPipelineConcurrencyCapsTheJobs() async throws {
        let overlap = Overlap()
        let key = script("count", overlap.body(hold: 0.05))
        let pipeline = try pipeline([("s1", [], key), ("s2", [], key), ("s3", [], key)],
                                    extra: "defaults:\n  concurrency: 1\n")
        XCTAssertEqual(pipeline.concurrency, 1)
        let report = try await run(pipeline, Clock().options(jobs: 8))
        XCTAssertEqual(report.status, .succeeded)
        XCTAssertEqual(overlap.maximum.current, 1)
    }

    func testStageStartsOnlyAfterItsInputsFinishedAndReceivesTheirOutputs() async throws {
        let log = Locked<[String]>([])
        let upstream = script("up") { context in
            Thread.sleep(forTimeInterval: 0.05)
            log.withLock { $0.append("\(context.stageID) done") }
        }
        let downstream = script("down") { context in
            log.withLock { $0.append("\(context.stageID) sees \(context.inputs.keys.sorted())") }
        }
        let pipeline = try pipeline([("a", [], upstream), ("b", [], upstream), ("c", ["a", "b"], downstream)])
        let report = try await run(pipeline, Clock().options(jobs: 4))
        XCTAssertEqual(report.status, .succeeded)
        XCTAssertEqual(log.current.last, "c sees [\"a\", \"b\"]")
        XCTAssertEqual(Set(log.current.prefix(2)), ["a done", "b done"])
    }

    // MARK: (b) failures

    func testFailedStageSkipsItsDependentsWhileAnIndependentBranchSucceeds() async throws {
        let ran = Locked<[String]>([])
        let record = script("record") { context in ran.withLock { $0.append(context.stageID) } }
        let fail = script("fail") { _ in throw StageFailure.data("row 7: amount is not a number") }
        let pipeline = try pipeline([
            ("bad", [], fail),
            ("after_bad", ["bad"], record),
            ("after_after_bad", ["after_bad"], record),
            ("good", [], record),
            ("after_good", ["good"], record),
        ])
        let clock = Clock()
        let recorder = Recorder()
        let report = try await run(pipeline, clock.options(jobs: 2, observers: [recorder]))

        XCTAssertEqual(report.status, .failed)
        XCTAssertEqual(report.stage("bad")?.status, .failed)
        XCTAssertEqual(report.stage("bad")?.attempts, 1)
        XCTAssertEqual(report.stage("bad")?.error, "data: row 7: amount is not a number")
        XCTAssertEqual(report.stage("after_bad")?.status, .skipped)
        XCTAssertEqual(report.stage("after_bad")?.attempts, 0)
        XCTAssertEqual(report.stage("after_bad")?.error, "input 'bad' did not succeed")
        XCTAssertEqual(report.stage("after_after_bad")?.status, .skipped)
        XCTAssertEqual(report.stage("after_after_bad")?.error, "input 'after_bad' did not succeed")
        XCTAssertEqual(report.stage("good")?.status, .succeeded)
        XCTAssertEqual(report.stage("after_good")?.status, .succeeded)
        XCTAssertEqual(Set(ran.current), ["good", "after_good"], "skipped stages must not run")
        XCTAssertEqual(report.stages.count, 5)
        XCTAssertEqual(clock.sleeps.current, [])
        XCTAssertTrue(recorder.events.current.contains("finish after_bad skipped"))
        XCTAssertEqual(recorder.events.current.last, "run failed")
    }

    func testStageThatThrowsAnUnknownErrorFailsWithoutRetry() async throws {
        struct Boom: Error, CustomStringConvertible { var description: String { "boom" } }
        let boom = script("boom") { _ in throw Boom() }
        let clock = Clock()
        let report = try await run(try pipeline([("x", [], boom)]), clock.options(jobs: 1))
        XCTAssertEqual(report.status, .failed)
        XCTAssertEqual(report.stage("x")?.attempts, 1)
        XCTAssertEqual(report.stage("x")?.error, "boom")
        XCTAssertEqual(clock.sleeps.current, [])
    }

    // MARK: (c)–(e) retries

    private let retryDefaults = """
        defaults:
          retry:
            max_attempts: 5
            initial_backoff: 2s
            multiplier: 3
            max_backoff: 60s
            jitter: 0.5

        """

    func testTransientFailureTwiceThenSuccessSucceedsOnTheThirdAttempt() async throws {
        let attempts = Locked<[Int]>([])
        let flaky = script("flaky") { context in
            attempts.withLock { $0.append(context.attempt) }
            if context.attempt < 3 { throw StageFailure.transient("source went away (attempt \(context.attempt))") }
        }
        let pipeline = try pipeline([("flaky", [], flaky)], extra: retryDefaults)
        let clock = Clock()
        let recorder = Recorder()
        // unit 0.75 → delay = base · (1 + 0.5 · (2·0.75 − 1)) = 1.25 · base
        let report = try await run(pipeline, clock.options(jobs: 1, random: 0.75, observers: [recorder]))

        XCTAssertEqual(report.status, .succeeded)
        XCTAssertEqual(report.stage("flaky")?.status, .succeeded)
        XCTAssertEqual(report.stage("flaky")?.attempts, 3)
        XCTAssertNil(report.stage("flaky")?.error)
        XCTAssertEqual(attempts.current, [1, 2, 3])
        XCTAssertEqual(clock.sleeps.current, [2.5, 7.5]) // bases 2 s and 6 s
        XCTAssertEqual(clock.randomCalls.current, 2)
        XCTAssertEqual(recorder.events.current, [
            "start flaky #1", "retry flaky #1 after 2.5",
            "start flaky #2", "retry flaky #2 after 7.5",
            "start flaky #3", "finish flaky succeeded", "run succeeded",
        ])
    }

    func testAnAbortDuringARetryBackoffEndsTheStageAtOnceWithoutAnotherAttempt() async throws {
        let attempts = Locked(0)
        let flaky = script("backoff") { _ in
            attempts.withLock { $0 += 1 }
            throw StageFailure.transient("source went away")
        }
        let pipeline = try pipeline([("s", [], flaky), ("after", ["s"], nil)], extra: """
            defaults:
              retry: {max_attempts: 3, initial_backoff: 30s, jitter: 0}

            """)
        // The real sleep: 30 s unless the abort cuts it short.
        let executor = try PipelineExecutor(pipeline: pipeline, options: RunOptions(jobs: 1))
        Task.detached {
            try? await Task.sleep(nanoseconds: 500_000_000)
            executor.cancel(reason: "received SIGTERM")
        }
        let started = Date()
        let report = try await executor.run()

        XCTAssertLessThan(Date().timeIntervalSince(started), 10, "the abort waited out the 30 s backoff")
        XCTAssertEqual(report.status, .aborted)
        XCTAssertEqual(report.stage("s")?.status, .aborted)
        XCTAssertEqual(report.stage("s")?.attempts, 1)
        XCTAssertEqual(report.stage("s")?.error, "aborted: received SIGTERM")
        XCTAssertEqual(attempts.current, 1, "a stage was attempted again after the abort")
        XCTAssertEqual(report.stage("after")?.status, .aborted)
    }

    func testRowsAReaderOfAFailedAttemptReportsLateDoNotCountInTheRetry() async throws {
        // Attempt 1 leaves a reader behind that reports rows only once attempt 2
        // is running, as a prefetch stopped at its next hand-off would.
        let retryStarted = DispatchSemaphore(value: 0)
        let stragglerDone = DispatchSemaphore(value: 0)
        let flaky = script("straggler") { context in
            if context.attempt == 1 {
                context.metrics.read(rows: 10)
                let metrics = context.metrics
                Thread.detachNewThread {
                    retryStarted.wait()
                    metrics.read(rows: 1_000)
                    metrics.exclude("late_rule", count: 7)
                    stragglerDone.signal()
                }
                throw StageFailure.transient("source went away")
            }
            retryStarted.signal()
            XCTAssertEqual(stragglerDone.wait(timeout: .now() + 10), .success, "the straggler never reported")
            context.metrics.read(rows: 5)
            context.metrics.produced(rows: 5)
        }
        let pipeline = try pipeline([("s", [], flaky)], extra: retryDefaults)
        let report = try await run(pipeline, Clock().options(jobs: 1))

        XCTAssertEqual(report.stage("s")?.status, .succeeded)
        XCTAssertEqual(report.stage("s")?.attempts, 2)
        XCTAssertEqual(report.stage("s")?.rowsIn, 5, "rows of the failed attempt counted in the retry")
        XCTAssertEqual(report.stage("s")?.rowsOut, 5)
        XCTAssertEqual(report.stage("s")?.excluded, [:])
    }

    func testTransientPostgresErrorIsRetriedAndItsSQLStateReported() async throws {
        let serialization = script("serialization") { context in
            if context.attempt == 1 {
                throw PGError(kind: .server, sqlState: "40001", message: "could not serialize access")
            }
        }
        let clock = Clock()
        let report = try await run(try pipeline([("s", [], serialization)], extra: retryDefaults),
                                   clock.options(jobs: 1, random: 0))
        XCTAssertEqual(report.stage("s")?.status, .succeeded)
        XCTAssertEqual(report.stage("s")?.attempts, 2)
        XCTAssertEqual(clock.sleeps.current, [1]) // base 2 s · (1 − 0.5)
    }

    func testPermanentFailureFailsAtOnceWithoutSleeping() async throws {
        let calls = Locked(0)
        let misconfigured = script("config") { _ in
            calls.withLock { $0 += 1 }
            throw StageFailure.config("column 'id' is text in the source but declared bigint")
        }
        let clock = Clock()
        let report = try await run(try pipeline([("m", [], misconfigured)], extra: retryDefaults), clock.options(jobs: 1))
        XCTAssertEqual(report.status, .failed)
        XCTAssertEqual(report.stage("m")?.status, .failed)
        XCTAssertEqual(report.stage("m")?.attempts, 1)
        XCTAssertEqual(report.stage("m")?.error, "configuration: column 'id' is text in the source but declared bigint")
        XCTAssertEqual(calls.current, 1)
        XCTAssertEqual(clock.sleeps.current, [])
        XCTAssertEqual(clock.randomCalls.current, 0)
    }

    func testPermanentPostgresErrorFailsAtOnceWithItsSQLState() async throws {
        let syntax = script("syntax") { _ in
            throw PGError(kind: .server, sqlState: "42601", message: "syntax error at or near \"FORM\"")
        }
        let clock = Clock()
        let report = try await run(try pipeline([("q", [], syntax)], extra: retryDefaults), clock.options(jobs: 1))
        XCTAssertEqual(report.stage("q")?.status, .failed)
        XCTAssertEqual(report.stage("q")?.attempts, 1)
        XCTAssertEqual(report.stage("q")?.sqlState, "42601")
        XCTAssertEqual(clock.sleeps.current, [])
    }

    func testExhaustedAttemptsFailWithAttemptsEqualToMaxAttempts() async throws {
        let calls = Locked(0)
        let down = script("down") { context in
            calls.withLock { $0 += 1 }
            throw PGError(kind: .connection, message: "could not connect to server (attempt \(context.attempt))")
        }
        let pipeline = try pipeline([("d", [], down), ("after", ["d"], nil)], extra: """
            defaults:
              retry: {max_attempts: 4, initial_backoff: 1s, multiplier: 2, max_backoff: 3s, jitter: 0}

            """)
        let clock = Clock()
        let report = try await run(pipeline, clock.options(jobs: 1))
        XCTAssertEqual(report.status, .failed)
        XCTAssertEqual(report.stage("d")?.status, .failed)
        XCTAssertEqual(report.stage("d")?.attempts, 4)
        XCTAssertEqual(report.stage("d")?.error, "could not connect to server (attempt 4)")
        XCTAssertEqual(calls.current, 4)
        XCTAssertEqual(clock.sleeps.current, [1, 2, 3], "no sleep after the last attempt; capped at max_backoff")
        XCTAssertEqual(report.stage("after")?.status, .skipped)
    }

    func testStageRetrySettingOverridesTheDefault() async throws {
        let always = script("always") { _ in throw StageFailure.transient("again") }
        let text = """
            pipeline: exec
            stages:
              - id: once
                type: scripted
                retry: {max_attempts: 1}
                config: {script: \(always)}
              - id: twice
                type: scripted
                retry: {max_attempts: 2, jitter: 0}
                config: {script: \(always)}

            """
        let clock = Clock()
        let report = try await run(try loadPipeline(text, registry: testRegistry), clock.options(jobs: 1))
        XCTAssertEqual(report.stage("once")?.attempts, 1)
        XCTAssertEqual(report.stage("twice")?.attempts, 2)
        XCTAssertEqual(clock.sleeps.current, [1])
    }

    // MARK: selection

    func testUnselectedUpstreamStageWithoutPersistedOutputFailsTheRun() async throws {
        let ran = Locked<[String]>([])
        let record = script("record") { context in ran.withLock { $0.append(context.stageID) } }
        let pipeline = try pipeline([("a", [], record), ("b", ["a"], record), ("c", [], record)])
        let clock = Clock()
        var options = clock.options(jobs: 2)
        options.selectors = ["b"]
        let report = try await run(pipeline, options)
        // 'a' is needed by 'b' but not selected: it must be restored, and scripted stages cannot be.
        XCTAssertEqual(report.stages.map(\.id), ["a", "b"], "'c' is neither selected nor needed")
        XCTAssertEqual(report.stage("a")?.status, .failed)
        XCTAssertTrue(report.stage("a")?.error?.contains("was not selected and its output is not persisted") == true)
        XCTAssertEqual(report.stage("b")?.status, .skipped)
        XCTAssertEqual(ran.current, [])
        XCTAssertEqual(report.status, .failed)
    }

    func testTheRunLockSessionNameKeepsTheRunIdWithinPostgres63Bytes() {
        let run = UUID()
        let name = RunLock.applicationName(pipeline: "a" + String(repeating: "é", count: 30), runID: run)
        XCTAssertLessThanOrEqual(name.utf8.count, 63)
        XCTAssertTrue(name.hasSuffix("/lock/\(run.uuidString.lowercased())"), name)
    }
}
