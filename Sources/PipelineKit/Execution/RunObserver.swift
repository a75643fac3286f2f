import Foundation
/// Receives a run's events as they happen: the lineage log, progress display
/// and tests listen here.
public protocol RunObserver: Sendable {
    func runStarted(_ run: RunInfo)
    func stageStarted(_ run: RunInfo, stage: StageDefinition, attempt: Int)
    func stageRetrying(_ run: RunInfo, stage: StageDefinition, attempt: Int, error: Error, delay: Double)
    func stageProgress(_ run: RunInfo, stage: String, rows: Int)
    func stageFinished(_ run: RunInfo, report: StageReport)
    func runFinished(_ run: RunInfo, report: RunReport)
}

extension RunObserver {
    public func runStarted(_ run: RunInfo) {}
    public func stageStarted(_ run: RunInfo, stage: StageDefinition, attempt: Int) {}
    public func stageRetrying(_ run: RunInfo, stage: StageDefinition, attempt: Int, error: Error, delay: Double) {}
    public func stageProgress(_ run: RunInfo, stage: String, rows: Int) {}
    public func stageFinished(_ run: RunInfo, report: StageReport) {}
    public func runFinished(_ run: RunInfo, report: RunReport) {}
}

/// Identity of a run, handed to observers.
public struct RunInfo: Sendable {
    public let runID: UUID
    public let pipeline: PipelineDefinition
    public let startedAt: Date
    /// Full or incremental, with the watermarks; nil when nothing is tracked.
    public let refresh: RefreshPlan?

    public init(runID: UUID, pipeline: PipelineDefinition, startedAt: Date, refresh: RefreshPlan? = nil) {
        self.runID = runID
        self.pipeline = pipeline
        self.startedAt = startedAt
        self.refresh = refresh
    }
}
