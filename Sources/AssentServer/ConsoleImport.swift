import AssentCore
import AssentStore
import Foundation
import HTTPTypes
import Hummingbird
import MultipartKit
import NIOCore

/// The console's import: upload a CSV with the batch's evidence statement,
/// see the dry run's report, then import it for real. The file is kept in a
/// temporary folder between the two steps (named by a random id, deleted after).
extension ConsolePages {
    static let maxUpload = 50 * 1024 * 1024

    var importRoutes: [ConsoleRoute] {
        [
            ConsoleRoute(method: .get, path: "/console/import", roles: Self.admins) { _, _, v in importPage(v!) },
            ConsoleRoute(method: .post, path: "/console/import", roles: Self.admins, upload: true) { r, c, v in try await upload(r, c, v!) },
            ConsoleRoute(method: .post, path: "/console/import/{id}", roles: Self.admins) { _, c, v in try await commitImport(c, v!) },
        ]
    }

    /// Uploads wait here between the dry run and the import: readable by this user only.
    static var uploadFolder: URL {
        FileManager.default.temporaryDirectory.appendingPathComponent("assent-imports-\(getuid())", isDirectory: true)
    }

    /// Creates the folder (0700) and deletes uploads left for more than a day (abandoned dry runs).
    static func prepareUploadFolder() throws {
        let folder = uploadFolder
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        try FileManager.default.setAttributes([.posixPermissions: 0o700], ofItemAtPath: folder.path)
        let cutoff = Date().addingTimeInterval(-86_400)
        for name in (try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? [] {
            let path = folder.appendingPathComponent(name).path
            if let modified = (try? FileManager.default.attributesOfItem(atPath: path))?[.modificationDate] as? Date, modified < cutoff {
                try? FileManager.default.removeItem(atPath: path)
            }
        }
    }

    static func removeUpload(_ id: String) {
        for suffix in ["csv", "evidence"] { try? FileManager.default.removeItem(at: uploadFolder.appendingPathComponent("\(id).\(suffix)")) }
    }

    func importPage(_ visit: ConsoleVisit, errors: [String] = [], status: HTTPResponse.Status = .ok) -> Response {
        render("console-import", title: "Import", visit: visit, nav: "Import", status: status, model: [:], errors: errors)
    }

    /// Reads a multipart body: the `file` part to a temporary file, the other (small) fields into a form.
    func readUpload(_ request: Request, to file: URL) async throws -> FormBody {
        guard let type = request.headers[.contentType], type.lowercased().hasPrefix("multipart/form-data"),
              let boundary = type.split(separator: ";").map({ $0.trimmingCharacters(in: .whitespaces) })
                .first(where: { $0.lowercased().hasPrefix("boundary=") })?.dropFirst("boundary=".count)
                .trimmingCharacters(in: CharacterSet(charactersIn: "\"")), !boundary.isEmpty else {
            throw DomainError.invalid(field: "file", "send the form as multipart/form-data")
        }
        guard FileManager.default.createFile(atPath: file.path, contents: nil, attributes: [.posixPermissions: 0o600]) else {
            throw DomainError.invalid(field: "file", "could not be stored for the import")
        }
        let handle = try FileHandle(forWritingTo: file)
        defer { try? handle.close() }
        let parser = MultipartParser(boundary: boundary)
        var name = "", fields: [(String, String)] = [], text = Data(), size = 0, tooLarge = false
        parser.onHeader = { header, value in
            guard header.lowercased() == "content-disposition",
                  let range = value.range(of: "name=\"") else { return }
            name = String(value[range.upperBound...].prefix { $0 != "\"" })
        }
        parser.onBody = { buffer in
            if name == "file" {
                size += buffer.readableBytes
                if size > Self.maxUpload { tooLarge = true; return }
                handle.write(Data(buffer.readableBytesView))
            } else if text.count < 16_384 {
                text.append(contentsOf: buffer.readableBytesView)
            }
        }
        parser.onPartComplete = {
            if name != "file" { fields.append((name, String(decoding: text, as: UTF8.self))) }
            name = ""
            text = Data()
        }
        for try await chunk in request.body {
            try parser.execute(chunk)
            if tooLarge { throw DomainError.invalid(field: "file", "is larger than \(Self.maxUpload / 1_048_576) MB: import it with 'assent import'") }
        }
        return FormBody(pairs: fields)
    }

    func upload(_ request: Request, _ context: AssentRequestContext, _ visit: ConsoleVisit) async throws -> Response {
        try Self.prepareUploadFolder()
        let id = UUID().uuidString.lowercased()
        let file = Self.uploadFolder.appendingPathComponent("\(id).csv")
        do {
            let form: FormBody
            do { form = try await readUpload(request, to: file) } catch DomainError.invalid(let errors) {
                Self.removeUpload(id)
                return importPage(visit, errors: errors.map(\.description), status: .unprocessableContent)
            }
            guard ledger.checkStaffCSRF(form.value("csrf"), sessionSecret: visit.secret) else {
                Self.removeUpload(id)
                return message(.forbidden, title: "This form has expired", paragraphs: ["Go back, reload the page and try again."], visit: visit)
            }
            let evidence = form.value("evidence") ?? ""
            // The statement travels with the file to the second step.
            FileManager.default.createFile(atPath: Self.uploadFolder.appendingPathComponent("\(id).evidence").path, contents: Data(evidence.utf8),
                                           attributes: [.posixPermissions: 0o600])
            return try await runImport(id: id, evidence: evidence, commit: false, context: context, visit: visit)
        } catch {
            Self.removeUpload(id)
            throw error
        }
    }

    func commitImport(_ context: AssentRequestContext, _ visit: ConsoleVisit) async throws -> Response {
        let id = try context.parameters.require("id")
        guard UUID(uuidString: id) != nil, let evidence = try? String(contentsOf: Self.uploadFolder.appendingPathComponent("\(id).evidence"), encoding: .utf8) else {
            return importPage(visit, errors: ["That upload is gone (already imported, or the server restarted); upload the file again."], status: .gone)
        }
        return try await runImport(id: id, evidence: evidence, commit: true, context: context, visit: visit)
    }

    private func runImport(id: String, evidence: String, commit: Bool, context: AssentRequestContext, visit: ConsoleVisit) async throws -> Response {
        let file = Self.uploadFolder.appendingPathComponent("\(id).csv")
        let report: ImportReport
        defer { if commit { Self.removeUpload(id) } }
        do {
            report = try await ledger.importContacts({
                guard let handle = FileHandle(forReadingAtPath: file.path) else { throw DomainError.invalid(field: "file", "the upload is gone") }
                return CSVReader(fileHandle: handle)
            }, options: ImportOptions(evidence: evidence, commit: commit, importedBy: visit.user.email.value, actor: .staff(visit.user.id.uuidString.lowercased())))
        } catch DomainError.invalid(let errors) {
            Self.removeUpload(id)
            return importPage(visit, errors: errors.map(\.description), status: .unprocessableContent)
        }
        if !report.problems.isEmpty { Self.removeUpload(id) }
        return render("console-import", title: commit ? "Imported" : "Import: dry run", visit: visit, nav: "Import",
                      status: report.problems.isEmpty ? .ok : .unprocessableContent, model: [
            "report": [
                "rows": report.rows, "newContacts": report.newContacts, "grants": report.grants, "withdrawals": report.withdrawals,
                "unchanged": report.unchanged, "suppressedCount": report.suppressed.count, "batch": report.batchID,
            ],
            "suppressed": report.suppressed.prefix(100).map { ["line": $0.line, "email": $0.email] }, "hasSuppressed": !report.suppressed.isEmpty,
            "problems": report.problems.map(\.description), "hasProblems": !report.problems.isEmpty,
            "dryRun": !commit && report.problems.isEmpty, "committed": report.committed, "upload": id, "evidence": evidence,
        ])
    }
}
