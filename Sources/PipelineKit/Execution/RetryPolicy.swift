import Foundation

/// How often and how patiently a stage is retried after a transient failure.
public struct RetryPolicy: Sendable, Equatable {
    public var maxAttempts: Int
    public var initialBackoff: Double
    public var multiplier: Double
    public var maxBackoff: Double
    /// Fraction of the delay that is randomised (0 = none, 0.2 = ±20%).
    public var jitter: Double

    public init(maxAttempts: Int = 3, initialBackoff: Double = 1, multiplier: Double = 2,
                maxBackoff: Double = 30, jitter: Double = 0.2) {
        self.maxAttempts = maxAttempts
        self.initialBackoff = initialBackoff
        self.multiplier = multiplier
        self.maxBackoff = maxBackoff
        self.jitter = jitter
    }

    public static let `default` = RetryPolicy()

    /// Seconds to wait after failed attempt `attempt` (1-based). `unit` is a
    /// random number in [0, 1) that spreads the delay over ±jitter.
    public func delay(afterAttempt attempt: Int, unit: Double) -> Double {
        // No delay stays no delay: 0 × an overflowing growth would be NaN.
        let base = initialBackoff == 0 ? 0 : min(maxBackoff, initialBackoff * pow(multiplier, Double(max(0, attempt - 1))))
        let spread = base * jitter * (2 * unit - 1)
        return max(0, min(maxBackoff, base + spread))
    }

    /// Whether an error deserves another attempt.
    public static func isTransient(_ error: Error) -> Bool {
        switch error {
        case let error as PGError: error.isTransient
        case let error as StageFailure: error.isTransient
        default: false
        }
    }

    static let configKeys: [ConfigKey] = [
        .optional("max_attempts", .integer(min: 1), "attempts in all, including the first (default 3)"),
        .optional("initial_backoff", .duration, "delay before the second attempt (default 1s)"),
        .optional("multiplier", .number, "growth of the delay per attempt (default 2)"),
        .optional("max_backoff", .duration, "longest delay (default 30s)"),
        .optional("jitter", .number, "random spread of each delay, 0 to 1 (default 0.2)"),
    ]

    /// This policy with the keys present in `node` overriding it.
    func overridden(by node: ConfigNode?, sink: DiagnosticSink) -> RetryPolicy {
        guard let node, node.isMapping else { return self }
        var policy = self
        if let value = node["max_attempts"]?.int { policy.maxAttempts = value }
        if let value = node["initial_backoff"]?.string.flatMap(DurationText.seconds) { policy.initialBackoff = value }
        if let value = node["multiplier"]?.double {
            if !(value >= 1 && value.isFinite) { sink.error(at: node["multiplier"]!, "'multiplier' must be at least 1, not \(value)") }
            policy.multiplier = value
        }
        if let value = node["max_backoff"]?.string.flatMap(DurationText.seconds) { policy.maxBackoff = value }
        if let value = node["jitter"]?.double {
            if !(0...1).contains(value) { sink.error(at: node["jitter"]!, "'jitter' must be between 0 and 1, not \(value)") }
            policy.jitter = value
        }
        return policy
    }
}
