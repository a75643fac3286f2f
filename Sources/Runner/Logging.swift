import Foundation
import Logging

enum LogSetup {
    /// Text logs go to stderr through swift-log's stream handler; JSON logs are one object per line.
    static func logger(format: LogFormat) -> Logger {
        let requested = ProcessInfo.processInfo.environment["RUNNER_LOG_LEVEL"]
        let level = requested.flatMap { Logger.Level(rawValue: $0.lowercased()) }
        let logger = Logger(label: "runner") { label in
            var handler: LogHandler = format == .json ? JSONLogHandler(label: label) : StreamLogHandler.standardError(label: label)
            handler.logLevel = level ?? .info
            return handler
        }
        if let requested, level == nil {
            logger.warning("RUNNER_LOG_LEVEL '\(requested)' is not a level; logging at info. Use one of: \(Logger.Level.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        return logger
    }
}

/// One JSON object per log line, for machines.
struct JSONLogHandler: LogHandler {
    let label: String
    var logLevel: Logger.Level = .info
    var metadata: Logger.Metadata = [:]

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    /// Milliseconds, so that the lines of one run can be told apart and timed.
    static let time = Date.ISO8601FormatStyle(includingFractionalSeconds: true)

    func log(event: LogEvent) {
        var object: [String: String] = [
            "time": Date().formatted(Self.time),
            "level": event.level.rawValue,
            "message": "\(event.message)",
        ]
        for (key, value) in metadata.merging(event.metadata ?? [:], uniquingKeysWith: { $1 }) { object[key] = "\(value)" }
        guard let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) else { return }
        FileHandle.standardError.write(data + Data("\n".utf8))
    }
}
