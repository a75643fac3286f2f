import Foundation
import Logging

/// Settings of one run.
public struct RunOptions: Sendable {
    public var jobs: Int
    public var selectors: [String]
    public var fullRefresh: Bool
    /// Wait for a concurrent run's lock instead of failing at once.
    public var waitForLock: Bool
    public var logger: Logger
    public var observers: [any RunObserver]
    /// The hash-chained OpenLineage log, if any. The warehouse mirror is
    /// always kept when the pipeline names `defaults.warehouse`.
    public var lineageLog: LineageLog?
    /// Sleeps between retries; injectable so tests need not wait.
    public var sleep: @Sendable (Double) async -> Void
    /// Uniform random numbers in [0, 1) for jitter; injectable for tests.
    public var random: @Sendable () -> Double
    /// A stage's session that has waited this long for another session's
    /// lock is reported in the log, with who holds it (see LockWaits).
    public var reportLockWaitsAfter: TimeInterval

    public init(jobs: Int = ProcessInfo.processInfo.activeProcessorCount, selectors: [String] = [],
                fullRefresh: Bool = false, waitForLock: Bool = false,
                logger: Logger = Logger(label: "pipelinekit"), observers: [any RunObserver] = [],
                lineageLog: LineageLog? = nil,
                sleep: @escaping @Sendable (Double) async -> Void = { seconds in
                    // Validation caps durations at a day; a computed delay is held to that too.
                    let bounded = seconds.isFinite ? Swift.min(Swift.max(seconds, 0), DurationText.maxSeconds) : 0
                    try? await Task.sleep(nanoseconds: UInt64(bounded * 1e9))
                },
                random: @escaping @Sendable () -> Double = { Double.random(in: 0..<1) },
                reportLockWaitsAfter: TimeInterval = 10) {
        self.jobs = max(1, jobs)
        self.selectors = selectors
        self.fullRefresh = fullRefresh
        self.waitForLock = waitForLock
        self.logger = logger
        self.observers = observers
        self.lineageLog = lineageLog
        self.sleep = sleep
        self.random = random
        self.reportLockWaitsAfter = reportLockWaitsAfter
    }
}

/// Runs a pipeline's stages in dependency order, at most `jobs` at a time,
/// retrying transient failures and skipping what depends on a failure.
public final class PipelineExecutor: Sendable {
    public let pipeline: PipelineDefinition
    public let plan: ExecutionPlan
    public let options: RunOptions
    public let runID: UUID
    private let cancellation = Cancellation()
    private let observers: [any RunObserver]
    private let lineage: LineageRecorder

    public init(pipeline: PipelineDefinition, options: RunOptions, runID: UUID = UUID()) throws {
        self.pipeline = pipeline
        // Every line of the run carries its id, from the lock to the last observer.
        var options = options
        options.logger[metadataKey: "run"] = .string(runID.uuidString.lowercased())
        self.options = options
        self.runID = runID
        plan = try ExecutionPlan(pipeline: pipeline, selectors: options.selectors)
        lineage = LineageRecorder(log: options.lineageLog, logger: options.logger)
        observers = options.observers + [lineage]
    }

    /// Stops scheduling, interrupts running statements (their transactions
    /// roll back) and makes the run end as aborted.
    public func cancel(reason: String) {
        options.logger.warning("aborting run", metadata: ["reason": .string(reason)])
        cancellation.cancel(reason: reason)
    }

    public func run() async throws -> RunReport {
        let startedAt = Date()
        // Sessions handed from stage to stage within the run.
        let sessions = SessionPool()
        defer { sessions.close() }
        warmForRefreshDecision(sessions)
        let lock: RunLock?
        do {
            lock = try await RunLock.acquire(pipeline: pipeline, runID: runID, wait: options.waitForLock,
                                             cancellation: cancellation, logger: options.logger)
        } catch where cancellation.isCancelled {
            // Interrupted while connecting or waiting for another run's lock.
            return abortedBeforeStart(startedAt)
        }
        defer { lock?.release() }
        // Opened for a run that then waited for the lock: they may be stale.
        if lock?.waited == true { sessions.discardIdle() }
        lineage.prepare(pipeline)
        let lockWaits = LockWaits(pipelineName: pipeline.name, definitions: pipeline.connections, logger: options.logger,
                                  after: options.reportLockWaitsAfter)
        defer { lockWaits.stop() }
        // Decided under the lock, so no concurrent run moves the state in between.
        let (pipeline, plan, options, cancellation) = (self.pipeline, self.plan, self.options, self.cancellation)
        let refresh: RefreshPlan?
        do {
            refresh = try await onOwnThread {
                try RefreshPlanner.plan(pipeline: pipeline, plan: plan, options: options, cancellation: cancellation,
                                        sessions: sessions, lockWaits: lockWaits)
            }
        } catch {
            // No run to record: the mirror's session is closed now, not when the executor goes.
            lineage.discardPrepared()
            if cancellation.isCancelled { return abortedBeforeStart(startedAt) }
            throw error
        }
        let refreshSummary = refresh?.summary ?? "full refresh: " + (RefreshPlanner.alwaysFull(pipeline) ?? "")
        options.logger.info("\(refreshSummary)")
        let info = RunInfo(runID: runID, pipeline: pipeline, startedAt: startedAt, refresh: refresh)
        observers.forEach { $0.runStarted(info) }
        let reports = await schedule(info, RunSessions(pool: sessions, lockWaits: lockWaits, runLock: lock?.writes))
        let stages = plan.order.compactMap { reports[$0] }
        let status: RunReport.Status = cancellation.isCancelled || stages.contains { $0.status == .aborted } ? .aborted
            : stages.contains { $0.status == .failed || $0.status == .skipped } ? .failed : .succeeded
        let report = RunReport(runID: runID, pipeline: pipeline.name, asOf: pipeline.asOf.description,
                               status: status, startedAt: info.startedAt,
                               seconds: Date().timeIntervalSince(info.startedAt), stages: stages,
                               refresh: refreshSummary)
        observers.forEach { $0.runFinished(info, report: report) }
        // Nothing of the run goes on after it: the key gap search (long
        // over by now) ends, with its source session, before the run does.
        _ = refresh?.gapSearch?.waitForResult()
        return report
    }

    /// The refresh decision reads the warehouse's state and each source's
    /// watermarks; that session then stays with the key gap search while the
    /// first stage needs another one. They are opened while the lock is taken.
    private func warmForRefreshDecision(_ sessions: SessionPool) {
        guard let warehouse = pipeline.warehouse else { return }
        var counts = [warehouse: 1]
        for (_, source) in RefreshPlanner.watermarkSources(of: pipeline) { counts[source.sourceConnection] = 2 }
        sessions.warm(counts, with: ConnectionProvider(pipelineName: pipeline.name, stageID: "refresh",
                                                       definitions: pipeline.connections, cancellation: cancellation))
    }

    /// The report of a run aborted before any stage started: every needed stage aborted.
    private func abortedBeforeStart(_ startedAt: Date) -> RunReport {
        let stages = plan.order.filter(needed.contains).compactMap(pipeline.stage).map {
            skippedReport($0, status: .aborted, reason: "run aborted before the stage started")
        }
        return RunReport(runID: runID, pipeline: pipeline.name, asOf: pipeline.asOf.description, status: .aborted,
                         startedAt: startedAt, seconds: Date().timeIntervalSince(startedAt), stages: stages)
    }

    /// Stages that must produce output for the selected ones: the selected
    /// stages and everything upstream of them.
    private var needed: Set<String> {
        var result = plan.selected
        var frontier = Array(plan.selected)
        while let next = frontier.popLast() {
            for input in awaitedInputs(of: next) where result.insert(input).inserted {
                frontier.append(input)
            }
        }
        return result
    }

    /// The inputs a stage waits for: none when it is restored (not selected)
    /// from what it persisted alone, e.g. a fact table read back.
    private func awaitedInputs(of id: String) -> [String] {
        if !plan.selected.contains(id), pipeline.stage(id)?.implementation.restoresWithoutInputs == true { return [] }
        return plan.inputs[id, default: []]
    }

    /// What every stage of a run shares about sessions.
    private struct RunSessions: Sendable {
        let pool: SessionPool
        let lockWaits: LockWaits
        let runLock: RunLockCheck?
    }

    private func schedule(_ info: RunInfo, _ sessions: RunSessions) async -> [String: StageReport] {
        let needed = self.needed
        var reports: [String: StageReport] = [:]
        var outputs: [String: StageOutput] = [:]
        var started: Set<String> = []
        let jobs = pipeline.concurrency.map { min($0, options.jobs) } ?? options.jobs

        await withTaskGroup(of: (StageReport, StageOutput?).self) { group in
            var running = 0
            func launchReady() {
                for id in plan.order where needed.contains(id) && !started.contains(id) && running < jobs {
                    let inputs = awaitedInputs(of: id)
                    guard inputs.allSatisfy({ reports[$0] != nil }) else { continue }
                    guard let stage = pipeline.stage(id) else { continue }
                    started.insert(id)
                    if cancellation.isCancelled {
                        reports[id] = skippedReport(stage, status: .aborted, reason: "run aborted before the stage started")
                        continue
                    }
                    if let failed = inputs.first(where: { outputs[$0] == nil }) {
                        reports[id] = skippedReport(stage, status: .skipped, reason: "input '\(failed)' did not succeed")
                        observers.forEach { $0.stageFinished(info, report: reports[id]!) }
                        continue
                    }
                    let stageInputs = outputs.filter { inputs.contains($0.key) }
                    running += 1
                    let restore = !plan.selected.contains(id)
                    group.addTask { await self.execute(stage, inputs: stageInputs, restore: restore, info: info, sessions) }
                }
            }
            launchReady()
            while let (report, output) = await group.next() {
                running -= 1
                reports[report.id] = report
                if let output { outputs[report.id] = output }
                // Skipped stages can unblock further skips, so repeat until nothing changes.
                var before = -1
                while before != started.count {
                    before = started.count
                    launchReady()
                }
            }
        }
        return reports
    }

    private func skippedReport(_ stage: StageDefinition, status: StageReport.Status, reason: String) -> StageReport {
        StageReport(id: stage.id, type: stage.type, status: status, attempts: 0, rowsIn: 0, rowsOut: 0,
                    written: nil, excluded: [:], seconds: 0, error: reason, sqlState: nil, datasets: [])
    }

    private func execute(_ stage: StageDefinition, inputs: [String: StageOutput], restore: Bool,
                         info: RunInfo, _ sessions: RunSessions) async -> (StageReport, StageOutput?) {
        var logger = options.logger
        logger[metadataKey: "stage"] = .string(stage.id)
        let observers = self.observers
        let begin = Date()
        var attempt = 0
        while true {
            attempt += 1
            // Counters of their own per attempt: a reader a failed attempt left
            // running (a prefetch stops at its next hand-off) reports into the
            // failed attempt's counters, never into the retry's.
            let metrics = StageMetrics { rows in observers.forEach { $0.stageProgress(info, stage: stage.id, rows: rows) } }
            var stageContext = StageContext(
                pipelineName: pipeline.name, runID: runID, stageID: stage.id, attempt: attempt, logger: logger,
                variables: pipeline.variables, asOf: pipeline.asOf, fullRefresh: options.fullRefresh,
                inputs: inputs,
                connections: ConnectionProvider(pipelineName: pipeline.name, stageID: stage.id,
                                                definitions: pipeline.connections, cancellation: cancellation,
                                                pool: sessions.pool, lockWaits: sessions.lockWaits),
                cancellation: cancellation, metrics: metrics, warehouseConnection: pipeline.warehouse,
                refresh: info.refresh, runLock: sessions.runLock)
            if !restore { stageContext.previousOutput = previousOutput(of: stage.id, refresh: info.refresh) }
            let context = stageContext
            observers.forEach { $0.stageStarted(info, stage: stage, attempt: attempt) }
            logger.info(restore ? "restoring persisted output" : "stage started", metadata: ["attempt": .stringConvertible(attempt)])
            do {
                let implementation = stage.implementation
                let output = try await onOwnThread {
                    if restore {
                        let restored: StageOutput?
                        do {
                            restored = try implementation.restore(context)
                        } catch let error as PGError where error.sqlState == "42P01" {
                            throw StageFailure.missingInput("stage '\(stage.id)' was not selected, and the table it persists does not exist yet (no run has written it); select it too (e.g. --select \(stage.id)+)")
                        }
                        guard let output = restored else {
                            throw StageFailure.missingInput("stage '\(stage.id)' was not selected and its output is not persisted; select it too (e.g. --select \(stage.id)+)")
                        }
                        return output
                    }
                    return try implementation.run(context)
                }
                let report = makeReport(stage, status: restore ? .restored : .succeeded, attempts: attempt,
                                        metrics: metrics, begin: begin, error: nil)
                logger.info("stage finished", metadata: ["rows_in": .stringConvertible(report.rowsIn),
                                                         "rows_out": .stringConvertible(report.rowsOut),
                                                         "seconds": .string(String(format: "%.2f", report.seconds))])
                observers.forEach { $0.stageFinished(info, report: report) }
                return (report, output)
            } catch {
                func aborted() -> Bool { cancellation.isCancelled || error is RunAborted }
                if !aborted(), RetryPolicy.isTransient(error), attempt < stage.retry.maxAttempts {
                    let delay = stage.retry.delay(afterAttempt: attempt, unit: options.random())
                    logger.warning("transient failure; retrying", metadata: [
                        "attempt": .stringConvertible(attempt), "delay_seconds": .string(String(format: "%.2f", delay)),
                        "error": .string(String(describing: error))])
                    observers.forEach { $0.stageRetrying(info, stage: stage, attempt: attempt, error: error, delay: delay) }
                    await backoff(delay)
                    // An abort during the wait ends the stage without another attempt.
                    if !aborted() { continue }
                }
                let report = makeReport(stage, status: aborted() ? .aborted : .failed, attempts: attempt, metrics: metrics,
                                        begin: begin, error: cancellation.abort ?? error)
                if report.status == .failed {
                    logger.error("stage failed", metadata: ["attempts": .stringConvertible(attempt),
                                                            "error": .string(String(describing: error))])
                }
                observers.forEach { $0.stageFinished(info, report: report) }
                return (report, nil)
            }
        }
    }

    /// The table a selected stage of this run persists `id`'s output in, in
    /// an incremental run: the refresh decision checked that every selected
    /// writer was last written by the run the changes are counted from.
    private func previousOutput(of id: String, refresh: RefreshPlan?) -> PersistedRows? {
        guard refresh?.isIncremental == true else { return nil }
        for consumer in plan.order where plan.selected.contains(consumer) && plan.inputs[consumer, default: []].contains(id) {
            if let rows = (pipeline.stage(consumer)?.implementation as? any PersistingStage)?.persistedRows(of: id) { return rows }
        }
        return nil
    }

    /// Waits `seconds` before a retry, or less if the run is aborted meanwhile.
    private func backoff(_ seconds: Double) async {
        let (sleep, cancellation) = (options.sleep, self.cancellation)
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await sleep(seconds) }
            group.addTask { await cancellation.cancelled() }
            await group.next()
            group.cancelAll()
        }
    }

    private func makeReport(_ stage: StageDefinition, status: StageReport.Status, attempts: Int,
                            metrics: StageMetrics, begin: Date, error: Error?) -> StageReport {
        StageReport(id: stage.id, type: stage.type, status: status, attempts: attempts,
                    rowsIn: metrics.rowsIn, rowsOut: metrics.rowsOut, written: metrics.written,
                    excluded: metrics.excluded, seconds: Date().timeIntervalSince(begin),
                    error: error.map { String(describing: $0) }, sqlState: (error as? PGError)?.sqlState,
                    datasets: metrics.datasets)
    }
}

/// Runs blocking work (libpq calls) on a thread of its own, so that the
/// cooperative thread pool is never blocked by a query.
func onOwnThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        let thread = Thread { continuation.resume(with: Result { try body() }) }
        thread.stackSize = 8 << 20
        thread.start()
    }
}
