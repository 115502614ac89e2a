import ArgumentParser

@main
struct Assent: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "assent",
        abstract: "A self-hosted consent and content-preference ledger.",
        subcommands: [Serve.self, Migrate.self, Topics.self, Forms.self, Contacts.self, Users.self, DSR.self, Audience.self, Segments.self, Webhooks.self, Import.self, Export.self, Keys.self, Outbox.self, Verify.self, Backup.self]
    )
}
