import Foundation
import Logging

enum LogSetup {
    /// Text logs go to stderr through swift-log's stream handler; JSON logs are one object per line.
    static func logger(format: LogFormat) -> Logger {
        let requested = ProcessInfo.processInfo.environment["RUNNER_LOG_LEVEL"]
        let level = requested.flatMap { Logger.Level(rawValue: $0.lowercased()) }
        let logger = Logger(label: "runner") { label in
            var handler: LogHandler = format == .json ? JSONLogHandler(label: label)
                : OneLineLogHandler(wrapped: StreamLogHandler.standardError(label: label))
            handler.logLevel = level ?? .info
            return handler
        }
        if let requested, level == nil {
            logger.warning("RUNNER_LOG_LEVEL '\(requested)' is not a level; logging at info. Use one of: \(Logger.Level.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        return logger
    }
}

/// Text logs, one line per event: an error's detail, context and hint,
/// which its description puts on lines of their own, are joined with "; ",
/// so that grep and log shippers see each event whole.
struct OneLineLogHandler: LogHandler {
    var wrapped: StreamLogHandler

    var logLevel: Logger.Level {
        get { wrapped.logLevel }
        set { wrapped.logLevel = newValue }
    }

    var metadata: Logger.Metadata {
        get { wrapped.metadata }
        set { wrapped.metadata = newValue }
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { wrapped[metadataKey: key] }
        set { wrapped[metadataKey: key] = newValue }
    }

    static func oneLine(_ text: String) -> String {
        guard text.contains(where: \.isNewline) else { return text }
        return text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { !$0.isEmpty }.joined(separator: "; ")
    }

    func log(event: LogEvent) {
        var event = event
        event.message = "\(Self.oneLine("\(event.message)"))"
        event.metadata = event.metadata?.mapValues { .string(Self.oneLine("\($0)")) }
        wrapped.log(event: event)
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
