import Foundation
import PipelineKit

/// On a terminal, one live line with each running stage's rows, rate and
/// elapsed time; elsewhere silent (the log lines say the same).
final class ProgressDisplay: RunObserver, @unchecked Sendable {
    private let enabled: Bool
    private let lock = NSLock()
    private var running: [String: (started: Date, rows: Int)] = [:]
    private var lastDraw = Date.distantPast

    init(enabled: Bool) { self.enabled = enabled }

    func stageStarted(_ run: RunInfo, stage: StageDefinition, attempt: Int) {
        lock.withLock { running[stage.id] = (Date(), 0) }
        draw(force: true)
    }

    func stageProgress(_ run: RunInfo, stage: String, rows: Int) {
        lock.withLock { running[stage]?.rows = rows }
        draw(force: false)
    }

    func stageFinished(_ run: RunInfo, report: StageReport) {
        _ = lock.withLock { running.removeValue(forKey: report.id) }
        draw(force: true)
    }

    func finish() {
        guard enabled else { return }
        FileHandle.standardError.write(Data("\r\u{1B}[K".utf8))
    }

    private func draw(force: Bool) {
        guard enabled else { return }
        let line: String? = lock.withLock {
            let now = Date()
            guard force || now.timeIntervalSince(lastDraw) > 0.2 else { return nil }
            lastDraw = now
            return running.sorted { $0.key < $1.key }.map { id, state in
                let elapsed = now.timeIntervalSince(state.started)
                let rate = elapsed > 0 ? Double(state.rows) / elapsed : 0
                return String(format: "%@ %d rows %.0f/s %.1fs", id, state.rows, rate, elapsed)
            }.joined(separator: " | ")
        }
        guard let line else { return }
        let columns = 160
        FileHandle.standardError.write(Data(("\r\u{1B}[K" + String(line.prefix(columns))).utf8))
    }
}
