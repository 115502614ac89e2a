// swift-tools-version: 6.2
import PackageDescription

let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
]

let package = Package(
    name: "Assent",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "assent", targets: ["assent"]),
        .executable(name: "assent-bench", targets: ["assent-bench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "4.5.2"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-extras", from: "1.35.2"),
        .package(url: "https://github.com/hummingbird-project/swift-mustache", from: "2.1.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird-auth", from: "2.5.0"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/vapor/multipart-kit", from: "4.7.1"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/x-sheep/swift-property-based", from: "2.0.1"),
    ],
    targets: [
        // Pure domain: types, state machine, canonical encoding, hashing, sealing.
        .target(
            name: "AssentCore",
            dependencies: [.product(name: "Crypto", package: "swift-crypto")],
            swiftSettings: swiftSettings
        ),
        // The storage protocol, the one write path, an in-memory store, and the
        // conformance suite every backend must pass.
        .target(
            name: "AssentStore",
            dependencies: ["AssentCore"],
            swiftSettings: swiftSettings
        ),
        // SQLite's process-wide settings, which only a C call can make (sqlite3_config is variadic).
        .target(
            name: "CSQLiteConfig",
            dependencies: [.product(name: "GRDBSQLite", package: "GRDB.swift")],
            linkerSettings: [.linkedLibrary("sqlite3")]
        ),
        // GRDB/SQLite backend: the embedded default.
        .target(
            name: "AssentSQLite",
            dependencies: ["AssentCore", "AssentStore", "CSQLiteConfig", .product(name: "GRDB", package: "GRDB.swift"),
                           .product(name: "GRDBSQLite", package: "GRDB.swift")],
            swiftSettings: swiftSettings
        ),
        // postgres-nio backend: for several instances on one database.
        .target(
            name: "AssentPostgres",
            dependencies: [
                "AssentCore", "AssentStore",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        // Email: MIME messages, Mustache templates, file and SMTP transports, the outbox worker.
        .target(
            name: "AssentMail",
            dependencies: [
                "AssentCore", "AssentStore",
                .product(name: "Mustache", package: "swift-mustache"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ],
            resources: [.copy("Templates")],
            swiftSettings: swiftSettings
        ),
        // Webhooks: the delivery worker (signed HTTP posts with retries) over AsyncHTTPClient.
        .target(
            name: "AssentWebhooks",
            dependencies: [
                "AssentCore", "AssentStore",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        // What tests share: a factory for every store, throwaway PostgreSQL databases.
        .target(
            name: "AssentTestSupport",
            dependencies: [
                "AssentCore", "AssentStore", "AssentSQLite", "AssentPostgres",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        // HTTP: JSON API on Hummingbird 2; wiring in buildApplication.
        .target(
            name: "AssentServer",
            dependencies: [
                "AssentCore", "AssentStore", "AssentSQLite", "AssentMail",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Mustache", package: "swift-mustache"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "HummingbirdBcrypt", package: "hummingbird-auth"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "MultipartKit", package: "multipart-kit"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            resources: [.copy("Resources/openapi.json"), .copy("Resources/pages"), .copy("Resources/words"), .copy("Resources/assent.css")],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "assent",
            dependencies: [
                "AssentCore", "AssentStore", "AssentSQLite", "AssentPostgres", "AssentServer", "AssentMail", "AssentWebhooks",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        // The benchmark (scripts/bench): drives a real `assent` over loopback with wrk and
        // measures the machine's own ceilings (raw SQLite, PostgreSQL, SHA-256, /healthz) in the same run.
        .executableTarget(
            name: "assent-bench",
            dependencies: [
                "AssentCore", "AssentTestSupport", "CSQLiteConfig",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "GRDBSQLite", package: "GRDB.swift"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(name: "AssentCoreTests", dependencies: ["AssentCore", .product(name: "Crypto", package: "swift-crypto"),
                                                         .product(name: "PropertyBased", package: "swift-property-based")], swiftSettings: swiftSettings),
        .testTarget(
            name: "AssentMailTests",
            dependencies: ["AssentMail", "AssentStore", "AssentCore", "AssentTestSupport"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "AssentWebhooksTests",
            dependencies: ["AssentWebhooks", "AssentStore", "AssentCore", "AssentTestSupport"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "AssentStoreTests",
            dependencies: ["AssentCore", "AssentStore", "AssentSQLite", "AssentPostgres", "AssentTestSupport", .product(name: "GRDB", package: "GRDB.swift"),
                           .product(name: "PropertyBased", package: "swift-property-based"), .product(name: "Crypto", package: "swift-crypto")],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "AssentServerTests",
            dependencies: [
                "AssentServer", "AssentSQLite", "AssentPostgres", "AssentTestSupport", "AssentMail",
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
            ],
            exclude: ["Snapshots"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "AssentCLITests",
            dependencies: ["AssentCore", "AssentSQLite", "AssentPostgres", "AssentTestSupport", .product(name: "GRDB", package: "GRDB.swift"),
                           .product(name: "PostgresNIO", package: "postgres-nio"),
                           .product(name: "AsyncHTTPClient", package: "async-http-client")],
            swiftSettings: swiftSettings
        ),
    ]
)
