import Foundation

/// A stage type: the unit of reuse in a pipeline file.
///
/// A stage type declares its configuration keys (which drive validation,
/// `runner stages` and the docs), decodes its configuration once when the
/// pipeline loads, and runs in a `StageContext` that gives it inputs,
/// connections, variables, a logger, progress, metrics and cancellation.
/// `run` is synchronous and may block on PostgreSQL: the executor gives every
/// attempt its own thread.
///
/// A complete stage type that passes its single input through:
///
/// ```swift
/// struct Passthrough: Stage {
///     static let type = "passthrough"
///     static let summary = "Hands its input on unchanged."
///     static let produces = OutputKind.relation
///     static let configKeys = [ConfigKey.required("from", .identifier, "the input stage")]
///     let from: String
///     init(config: ConfigNode, build: StageBuild) throws {
///         from = try build.input(config["from"], kind: .relation)
///     }
///     func run(_ context: StageContext) throws -> StageOutput {
///         .relation(try context.relation(from))
///     }
/// }
/// ```
/// and one line to make it available: `registry.register(Passthrough.self)`.
public protocol Stage: Sendable {
    /// The name used as `type:` in pipeline files.
    static var type: String { get }
    /// One line for `runner stages`.
    static var summary: String { get }
    /// What downstream stages receive.
    static var produces: OutputKind { get }
    /// The documented configuration keys; unknown keys are rejected.
    static var configKeys: [ConfigKey] { get }

    /// Decodes the (already shape-checked) configuration. Report problems
    /// through `build` and throw `StageBuild.Invalid` when the stage cannot be built.
    init(config: ConfigNode, build: StageBuild) throws

    /// Does the work of one attempt.
    func run(_ context: StageContext) throws -> StageOutput

    /// The output as already persisted by an earlier run, for `--select`
    /// runs that skip this stage; nil when it cannot be had without running.
    func restore(_ context: StageContext) throws -> StageOutput?

    /// Whether `restore` works without the stage's inputs (it reads only what
    /// the stage persisted), so a `--select` run need not produce them.
    var restoresWithoutInputs: Bool { get }

    /// The warehouse tables the stage writes. A writing stage commits the
    /// run's refresh state with its rows, and an incremental run needs the
    /// state of every writing stage.
    var tablesWritten: [String] { get }

    /// The columns of the output, worked out before anything runs from the
    /// columns of the inputs (by input id; a lookup's are its rows'). nil
    /// when they cannot be known without running. Throws `StageFailure` for
    /// a column the stage needs and its inputs lack, which it would
    /// otherwise meet only at run time, maybe after other stages wrote.
    func outputColumns(inputs: [String: [Field]]) throws -> [Field]?
}

extension Stage {
    public func outputColumns(inputs: [String: [Field]]) throws -> [Field]? { nil }
    public func restore(_ context: StageContext) throws -> StageOutput? { nil }
    public var restoresWithoutInputs: Bool { false }
    public var tablesWritten: [String] { [] }
}

/// A stage that keeps an input's rows in a warehouse table (factUpsert).
/// In an incremental run the stage producing that input is handed the table
/// as its previous output (`StageContext.previousOutput`), much as an
/// incremental dbt model reads `{{ this }}`.
public protocol PersistingStage: Stage {
    /// The rows `input` produced as the last run left them in the table;
    /// nil when this stage does not persist `input`.
    func persistedRows(of input: String) -> PersistedRows?
}

/// A stage's output as a table keeps it.
public struct PersistedRows: Sendable {
    /// The table's rows, in the columns written.
    public let rows: any Relation
    /// The columns no two rows share.
    public let key: [String]

    public init(rows: any Relation, key: [String]) {
        self.rows = rows
        self.key = key
    }
}

/// The kinds of output stages exchange.
public enum OutputKind: String, Sendable {
    case relation, lookup, table
}

/// What a stage hands to the stages that take it as input.
public enum StageOutput: Sendable {
    case relation(any Relation)
    case lookup(Lookup)
    /// A lookup whose rows an incremental run reads by key, as consumers ask.
    case keyedLookup(KeyedLookup)
    /// A warehouse table was written; downstream stages may read it as a relation.
    case table(name: String, relation: any Relation)

    public var kind: OutputKind {
        switch self {
        case .relation: .relation
        case .lookup, .keyedLookup: .lookup
        case .table: .table
        }
    }
}
