// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "PipelineKit",
    platforms: [.macOS(.v13)],
    products: [
        .library(name: "PipelineKit", targets: ["PipelineKit"]),
        .library(name: "Stages", targets: ["Stages"]),
        .executable(name: "runner", targets: ["Runner"]),
    ],
    dependencies: [
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "3.12.3"),
    ],
    targets: [
        .systemLibrary(
            name: "CLibPQ",
            pkgConfig: "libpq",
            providers: [.apt(["libpq-dev"])]
        ),
        .target(
            name: "PipelineKit",
            dependencies: [
                "CLibPQ",
                .product(name: "Yams", package: "Yams"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        .target(
            name: "Stages",
            dependencies: ["PipelineKit", .product(name: "Logging", package: "swift-log")]
        ),
        .executableTarget(
            name: "Runner",
            dependencies: [
                "PipelineKit", "Stages",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(name: "PipelineKitTests", dependencies: ["PipelineKit", "Stages"]),
        .testTarget(name: "StagesTests", dependencies: ["PipelineKit", "Stages"]),
        .testTarget(name: "RunnerTests", dependencies: [
            "Runner", "PipelineKit",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
    ]
)
