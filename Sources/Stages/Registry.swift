import PipelineKit

extension StageRegistry {
    /// Every stage type that ships with PipelineKit. A new stage type is one
    /// file plus one line here.
    public static var standard: StageRegistry {
        var registry = StageRegistry()
        registry.register(PgExtract.self)
        registry.register(LookupBuild.self)
        registry.register(WindowAggregate.self)
        registry.register(FactUpsert.self)
        registry.register(MetricRollup.self)
        return registry
    }
}
