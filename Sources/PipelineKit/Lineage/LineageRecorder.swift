import Foundation
import Logging

/// Records a run's lineage: OpenLineage events in the hash-chained log, and
/// runs and stage runs in the warehouse mirror. Failures to record are logged,
/// never allowed to fail the data work.
///
/// A stage's events are recorded in order on a queue of their own, so that
/// the run does not wait for a file lock or a round trip between its stages;
/// the end of the run waits until all are recorded.
public final class LineageRecorder: RunObserver, @unchecked Sendable {
    private let log: LineageLog?
    private let logger: Logger
    private let lock = NSLock()
    private var mirror: PGConnection?
    /// Where the mirror's session was opened, to open it again if the server ends it.
    private var mirrorTarget: (info: ConnInfo, applicationName: String)?
    private var stageRunIDs: [String: UUID] = [:]
    private let queue = DispatchQueue(label: "pipelinekit.lineage")
    /// The mirror's session as `prepare` opened it; only used on the queue.
    private var prepared: Result<(PGConnection, ConnInfo, String), Error>?

    public init(log: LineageLog?, logger: Logger) {
        self.log = log
        self.logger = logger
    }

    private func stageRunID(_ stage: String) -> UUID {
        lock.withLock {
            if let id = stageRunIDs[stage] { return id }
            let id = UUID()
            stageRunIDs[stage] = id
            return id
        }
    }

    private func emit(_ event: JSON) {
        guard let log else { return }
        do { try log.append(event) } catch {
            logger.error("could not append to the lineage log", metadata: ["path": .string(log.path), "error": .string("\(error)")])
        }
    }

    private func mirrorQuery(_ sql: String, _ parameters: [String?]) {
        lock.withLock {
            guard let session = mirror else { return }
            do { try session.query(sql, parameters) } catch {
                // A session the server ended (an administrator, a restart) is
                // opened again, and the statement retried: they are idempotent.
                // If that fails too, the mirror is left alone for the rest of the
                // run rather than holding up every later event with a connect.
                guard !session.isAlive, let target = mirrorTarget else {
                    return logger.error("could not update the lineage mirror", metadata: ["error": .string("\(error)")])
                }
                mirror = nil
                do {
                    let reopened = try PGConnection(target.info, applicationName: target.applicationName, connectTimeout: 5)
                    try reopened.query(sql, parameters)
                    mirror = reopened
                    logger.info("the lineage mirror's session had ended; it was opened again")
                } catch {
                    logger.error("could not update the lineage mirror", metadata: ["error": .string("\(error)")])
                }
            }
        }
    }

    static func runFacets(_ run: RunInfo) -> [String: JSON] {
        var facets: [String: JSON] = [
            "pipelinekit_run": OpenLineage.facet("PipelineRunFacet", [
                "pipelineFileSHA256": .string(run.pipeline.fileSHA256),
                "pipelineFile": .string(run.pipeline.file),
                "runnerVersion": .string(PipelineKitInfo.version),
                "variables": .object(run.pipeline.variables.mapValues { .string($0.text) }),
                "asOf": .string(run.pipeline.asOf.description),
                "stageConfigSHA256": .object(Dictionary(uniqueKeysWithValues: run.pipeline.stages.map { ($0.id, JSON.string($0.configFingerprint)) })),
            ]),
        ]
        if let refresh = run.refresh { facets["pipelinekit_refresh"] = OpenLineage.facet("RefreshRunFacet", Self.fields(refresh.json)) }
        return facets
    }

    private static func fields(_ json: JSON) -> [String: JSON] {
        if case .object(let fields) = json { return fields }
        return [:]
    }

    /// Opens the mirror's session and makes sure of its tables while the run
    /// does other things (its refresh decision); `runStarted` waits for it.
    public func prepare(_ pipeline: PipelineDefinition) {
        queue.async { self.prepared = self.openMirror(pipeline) }
    }

    /// Closes what `prepare` opened, for a run that ends before it starts.
    public func discardPrepared() {
        queue.sync { prepared = nil }
    }

    /// Recorded before any stage runs: their writes record themselves in the mirror it sets up.
    public func runStarted(_ run: RunInfo) {
        queue.sync { recordStart(run) }
    }

    /// Waits until every event so far is recorded.
    public func flush() {
        queue.sync {}
    }

    /// A session whose mirror tables exist, with how to open it again; nil
    /// without a warehouse. Only on the queue.
    private func openMirror(_ pipeline: PipelineDefinition) -> Result<(PGConnection, ConnInfo, String), Error>? {
        guard let name = pipeline.warehouse, let definition = pipeline.connections[name] else { return nil }
        return Result {
            let applicationName = ConnectionProvider.applicationName("runner/\(pipeline.name)/lineage")
            let connection = try PGConnection(definition.info, applicationName: applicationName)
            try LineageMirror.ensureSchema(connection)
            return (connection, definition.info, applicationName)
        }
    }

    private func recordStart(_ run: RunInfo) {
        emit(OpenLineage.event(type: "START", time: run.startedAt, runID: run.runID, job: run.pipeline.name,
                               runFacets: Self.runFacets(run)))
        guard let opened = prepared ?? openMirror(run.pipeline) else { return }
        prepared = nil
        do {
            let (connection, info, applicationName) = try opened.get()
            let variables = try JSON.object(run.pipeline.variables.mapValues { .string($0.text) }).line()
            let configs = try JSON.object(Dictionary(uniqueKeysWithValues: run.pipeline.stages.map { ($0.id, JSON.string($0.configFingerprint)) })).line()
            let refresh = try run.refresh.map { try $0.json.line() }
            try connection.query("""
                INSERT INTO lineage.runs (run_id, pipeline, status, started_at, as_of, pipeline_sha256, variables,
                                          stage_configs, runner_version, log_path, refresh)
                VALUES ($1, $2, 'running', $3, $4, $5, $6::jsonb, $7::jsonb, $8, $9, $10::jsonb)
                """, [run.runID.uuidString.lowercased(), run.pipeline.name, OpenLineage.timestamp(run.startedAt),
                      run.pipeline.asOf.description, run.pipeline.fileSHA256, variables, configs,
                      PipelineKitInfo.version, log?.path, refresh])
            lock.withLock {
                mirror = connection
                mirrorTarget = (info, applicationName)
            }
        } catch {
            logger.error("could not record the run in the lineage mirror", metadata: ["error": .string("\(error)")])
        }
    }

    private func parent(_ run: RunInfo) -> JSON {
        OpenLineage.standardFacet("ParentRunFacet.json", [
            "run": .object(["runId": .string(run.runID.uuidString.lowercased())]),
            "job": .object(["namespace": .string(OpenLineage.namespace), "name": .string(run.pipeline.name)]),
        ])
    }

    public func stageStarted(_ run: RunInfo, stage: StageDefinition, attempt: Int) {
        guard attempt == 1 else { return }
        let event = OpenLineage.event(type: "START", runID: stageRunID(stage.id), job: "\(run.pipeline.name).\(stage.id)", runFacets: [
            "parent": parent(run),
            "pipelinekit_stage": OpenLineage.facet("StageRunFacet", [
                "type": .string(stage.type), "configSHA256": .string(stage.configFingerprint), "attempt": .int(attempt),
            ]),
        ])
        queue.async { self.emit(event) }
    }

    public func stageRetrying(_ run: RunInfo, stage: StageDefinition, attempt: Int, error: Error, delay: Double) {
        let event = OpenLineage.event(type: "RUNNING", runID: stageRunID(stage.id), job: "\(run.pipeline.name).\(stage.id)", runFacets: [
            "parent": parent(run),
            "pipelinekit_retry": OpenLineage.facet("RetryRunFacet", [
                "failedAttempt": .int(attempt), "nextAttempt": .int(attempt + 1),
                "error": .string(String(describing: error)),
                "sqlState": (error as? PGError)?.sqlState.map(JSON.string) ?? .null,
                "delaySeconds": .double(delay),
            ]),
        ])
        queue.async { self.emit(event) }
    }

    public func stageFinished(_ run: RunInfo, report: StageReport) {
        let time = Date()
        queue.async { self.recordStageEnd(run, report: report, time: time) }
    }

    private func recordStageEnd(_ run: RunInfo, report: StageReport, time: Date) {
        let type: String = switch report.status {
        case .succeeded, .restored: "COMPLETE"
        case .failed: "FAIL"
        case .skipped, .aborted: "ABORT"
        }
        var facets: [String: JSON] = [
            "parent": parent(run),
            "pipelinekit_stage": OpenLineage.facet("StageRunFacet", [
                "type": .string(report.type), "status": .string(report.status.rawValue), "attempts": .int(report.attempts),
                "rowsIn": .int(report.rowsIn), "rowsOut": .int(report.rowsOut), "seconds": .double(report.seconds),
                "configSHA256": .string(run.pipeline.stage(report.id)?.configFingerprint ?? ""),
            ]),
            "pipelinekit_dataQuality": OpenLineage.facet("DataQualityRunFacet", [
                "excludedRows": .object(report.excluded.mapValues(JSON.int)),
            ]),
        ]
        if let error = report.error {
            facets["errorMessage"] = OpenLineage.standardFacet("ErrorMessageRunFacet.json", [
                "message": .string(error + (report.sqlState.map { " (SQLSTATE \($0))" } ?? "")),
                "programmingLanguage": .string("Swift"),
            ])
        }
        emit(OpenLineage.event(type: type, time: time, runID: stageRunID(report.id), job: "\(run.pipeline.name).\(report.id)",
                               runFacets: facets,
                               inputs: report.datasets.filter { $0.direction == .input }.map { OpenLineage.dataset($0, report: report) },
                               outputs: report.datasets.filter { $0.direction == .output }.map { OpenLineage.dataset($0, report: report) }))
        let excluded = (try? JSON.object(report.excluded.mapValues(JSON.int)).line()) ?? "{}"
        mirrorQuery("""
            INSERT INTO lineage.stage_runs (run_id, stage_id, stage_type, status, attempts, rows_in, rows_out,
                                            excluded, config_sha256, seconds, error, sql_state)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9, $10, $11, $12)
            ON CONFLICT (run_id, stage_id) DO NOTHING
            """, [run.runID.uuidString.lowercased(), report.id, report.type, report.status.rawValue, String(report.attempts),
                  String(report.rowsIn), String(report.rowsOut), excluded,
                  run.pipeline.stage(report.id)?.configFingerprint ?? "", String(report.seconds), report.error, report.sqlState])
    }

    public func runFinished(_ run: RunInfo, report: RunReport) {
        let time = Date()
        queue.sync { recordEnd(run, report: report, time: time) }
    }

    private func recordEnd(_ run: RunInfo, report: RunReport, time: Date) {
        let type: String = switch report.status {
        case .succeeded: "COMPLETE"
        case .failed: "FAIL"
        case .aborted: "ABORT"
        }
        let written = report.stages.compactMap(\.written).reduce(0) { $0 + $1.changed }
        var facets = Self.runFacets(run)
        facets["pipelinekit_summary"] = OpenLineage.facet("RunSummaryFacet", [
            "status": .string(report.status.rawValue), "seconds": .double(report.seconds), "rowsWritten": .int(written),
            "stages": .object(Dictionary(uniqueKeysWithValues: report.stages.map { ($0.id, JSON.string($0.status.rawValue)) })),
        ])
        let failure = report.stages.first { $0.status == .failed || $0.status == .aborted }
        if let failure, let error = failure.error {
            facets["errorMessage"] = OpenLineage.standardFacet("ErrorMessageRunFacet.json", [
                "message": .string("stage \(failure.id): \(error)" + (failure.sqlState.map { " (SQLSTATE \($0))" } ?? "")),
                "programmingLanguage": .string("Swift"),
            ])
        }
        emit(OpenLineage.event(type: type, time: time, runID: run.runID, job: run.pipeline.name, runFacets: facets))
        mirrorQuery("""
            UPDATE lineage.runs SET status = $2, finished_at = now(), rows_written = $3, error = $4, last_log_hash = $5
            WHERE run_id = $1
            """, [run.runID.uuidString.lowercased(), report.status.rawValue, String(written),
                  failure.flatMap { f in f.error.map { "stage \(f.id): \($0)" } }, log?.lastHash])
        lock.withLock { mirror = nil }
    }
}
