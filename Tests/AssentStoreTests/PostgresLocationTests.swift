import AssentCore
@testable import AssentPostgres
import Testing

@Suite struct PostgresLocationTests {
    @Test func keepAliveIsOffUnlessTheURLAsksForIt() throws {
        let plain = try PostgresLocation(url: "postgres://assent:secret@db.example:5433/ledger?sslmode=require")
        #expect(plain.keepAliveSeconds == nil && plain.tls == .require && plain.port == 5433 && plain.database == "ledger")
        #expect(plain.clientConfiguration.options.keepAliveBehavior == nil, "no ping timer per idle connection unless asked")

        let pinged = try PostgresLocation(url: "postgres://assent@db.example/ledger?sslmode=disable&keepalive_seconds=45")
        #expect(pinged.keepAliveSeconds == 45)
        #expect(pinged.clientConfiguration.options.keepAliveBehavior?.frequency == .seconds(45))
        #expect(try PostgresLocation(url: pinged.url) == pinged, "the URL form keeps it")
        #expect(!pinged.libpqURL.contains("keepalive") && pinged.libpqURL.contains("sslmode=disable"),
                "pg_dump's URL leaves it out (libpq refuses parameters it does not know): \(pinged.libpqURL)")

        for bad in ["0", "-5", "often", "86401"] {
            #expect(throws: DomainError.invalid(field: "ASSENT_DATABASE_URL",
                                                "keepalive_seconds '\(bad)' must be a whole number of seconds from 1 to 86400")) {
                try PostgresLocation(url: "postgres://assent@db.example/ledger?keepalive_seconds=\(bad)")
            }
        }
    }
}
