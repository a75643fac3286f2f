import Foundation

/// What happened to one stage in a run.
public struct StageReport: Sendable, Codable {
    public enum Status: String, Sendable, Codable {
        case succeeded, failed, skipped, aborted
        /// Not selected; its persisted output was used instead.
        case restored
    }

    public var id: String
    public var type: String
    public var status: Status
    public var attempts: Int
    public var rowsIn: Int
    public var rowsOut: Int
    public var written: WriteCounts?
    public var excluded: [String: Int]
    public var seconds: Double
    public var error: String?
    public var sqlState: String?
    public var datasets: [DatasetUse]
}

/// What happened in a run, stage by stage.
public struct RunReport: Sendable, Codable {
    public enum Status: String, Sendable, Codable { case succeeded, failed, aborted }

    public var runID: UUID
    public var pipeline: String
    public var asOf: String
    public var status: Status
    public var startedAt: Date
    public var seconds: Double
    public var stages: [StageReport]
    /// "full refresh: REASON" or "incremental since run ..."; nil when the run was aborted before deciding.
    public var refresh: String? = nil

    public func stage(_ id: String) -> StageReport? { stages.first { $0.id == id } }

    /// A fixed-width table for terminals and logs.
    public var summaryTable: String {
        let header = ["stage", "type", "status", "attempts", "rows in", "rows out", "written", "time"]
        let rows = stages.map { stage -> [String] in
            let written = stage.written.map { "+\($0.inserted) ~\($0.updated) -\($0.deleted) =\($0.unchanged)" } ?? ""
            return [stage.id, stage.type, stage.status.rawValue, String(stage.attempts),
                    String(stage.rowsIn), String(stage.rowsOut), written, String(format: "%.2fs", stage.seconds)]
        }
        var lines = [TextTable(columns: header, rows: rows).rendered]
        for stage in stages where !stage.excluded.isEmpty {
            let rules = stage.excluded.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ", ")
            lines.append("\(stage.id): excluded rows: \(rules)")
        }
        for stage in stages {
            if let error = stage.error { lines.append("\(stage.id): \(stage.status.rawValue): \(error)") }
        }
        if let refresh { lines.append(refresh) }
        lines.append(String(format: "run %@ %@ in %.2fs (as_of %@)", runID.uuidString.lowercased(), status.rawValue, seconds, asOf))
        return lines.joined(separator: "\n")
    }
}
