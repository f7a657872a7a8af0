/**
 * Smoke test against the REAL language server: `<python> -P -m stark_lsp` (the repository's
 * .venv, or $STARK_PYTHON), driven over stdio with vscode-languageserver-protocol, the wire
 * library VS Code's client is built on. It sends what this extension sends (the settings
 * from src/settings.ts, VS Code-like capabilities) and checks what the extension relies on:
 * work-done progress, `stark/jobUpdated` reaching `done` (parsed by the extension's own
 * JobsModel), and `stark.applyBest` arriving as a confirmed workspace edit that creates
 * `<name>_stark.py`.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { pathToFileURL, fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';

import {
    ApplyWorkspaceEditRequest,
    type ApplyWorkspaceEditParams,
    type ClientCapabilities,
    ConfigurationRequest,
    ExecuteCommandRequest,
    ExitNotification,
    InitializeRequest,
    InitializedNotification,
    type ProtocolConnection,
    ShowMessageNotification,
    ShutdownRequest,
    StreamMessageReader,
    StreamMessageWriter,
    TextDocumentEdit,
    CreateFile,
    WorkDoneProgress,
    WorkDoneProgressCreateRequest,
    type WorkDoneProgressBegin,
    type WorkDoneProgressEnd,
    type WorkDoneProgressReport,
    createProtocolConnection,
} from 'vscode-languageserver-protocol/node';

import { JobsModel, bestNode, canApply, nodeLabel } from '../../src/jobsModel';
import { SERVER_ARGS, serverSettings } from '../../src/settings';

const REPO_ROOT = path.resolve(__dirname, '..', '..', '..', '..');
const PYTHON = process.env['STARK_PYTHON'] ?? path.join(REPO_ROOT, '.venv', 'bin', 'python');
const JOB_TIMEOUT_MS = 300_000;

const TINY_REFERENCE = `"""A small elementwise chain: quick to benchmark, and large enough (1024²) that a fused kernel
wins beyond the timing noise, so the seed (a baseline copy) is not the only correct node."""

import torch
import torch.nn as nn

N = 1024


class Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x * 1.5 + 0.25
        y = torch.relu(y) * torch.sigmoid(x)
        return torch.clamp(y, -0.5, 2.0)


def get_inputs() -> list[torch.Tensor]:
    return [torch.randn(N, N)]


def get_init_inputs() -> list:
    return []
`;

/** What VS Code 1.9x declares for the parts this server uses. */
const CAPABILITIES: ClientCapabilities = {
    workspace: {
        applyEdit: true,
        configuration: true,
        workspaceFolders: true,
        didChangeConfiguration: { dynamicRegistration: true },
        workspaceEdit: {
            documentChanges: true,
            resourceOperations: ['create', 'rename', 'delete'],
            failureHandling: 'textOnlyTransactional',
            normalizesLineEndings: true,
            changeAnnotationSupport: { groupsOnLabel: true },
        },
        codeLens: { refreshSupport: true },
        executeCommand: { dynamicRegistration: true },
    },
    textDocument: {
        synchronization: { dynamicRegistration: true, didSave: true },
        publishDiagnostics: { relatedInformation: true, versionSupport: false, codeDescriptionSupport: true, dataSupport: true },
        codeAction: { dynamicRegistration: true, isPreferredSupport: true, dataSupport: true },
        codeLens: { dynamicRegistration: true },
        hover: { dynamicRegistration: true, contentFormat: ['markdown', 'plaintext'] },
    },
    window: { workDoneProgress: true, showMessage: { messageActionItem: { additionalPropertiesSupport: true } } },
};

type ProgressValue = WorkDoneProgressBegin | WorkDoneProgressReport | WorkDoneProgressEnd;

/** A started server plus everything it sent. */
interface Session {
    readonly process: ChildProcess;
    readonly connection: ProtocolConnection;
    readonly workspace: string;
    readonly stderr: string[];
    readonly updates: unknown[];
    readonly progress: Map<string, ProgressValue[]>;
    readonly edits: ApplyWorkspaceEditParams[];
    readonly messages: string[];
    readonly model: JobsModel;
}

async function startServer(workspace: string, settings: Record<string, unknown>): Promise<Session> {
    assert.ok(
        fs.existsSync(PYTHON),
        `no Python at ${PYTHON}: run scripts/setup.sh in the repository, or set STARK_PYTHON to an interpreter with STARK installed`,
    );
    const child = spawn(PYTHON, [...SERVER_ARGS], {
        cwd: workspace,
        env: { ...process.env, PYTHONUNBUFFERED: '1' },
        stdio: ['pipe', 'pipe', 'pipe'],
    });
    const stderr: string[] = [];
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk: string) => stderr.push(chunk));
    const connection = createProtocolConnection(new StreamMessageReader(child.stdout), new StreamMessageWriter(child.stdin));
    const session: Session = {
        process: child,
        connection,
        workspace,
        stderr,
        updates: [],
        progress: new Map(),
        edits: [],
        messages: [],
        model: new JobsModel(),
    };
    const section = serverSettings((key) => settings[key], settings['trust'] !== false);

    connection.onNotification('stark/jobUpdated', (params: unknown) => {
        session.updates.push(params);
        session.model.update(params);
    });
    connection.onRequest(WorkDoneProgressCreateRequest.type, (params) => {
        const token = String(params.token);
        session.progress.set(token, []);
        connection.onProgress(WorkDoneProgress.type, params.token, (value) => {
            session.progress.get(token)?.push(value);
        });
    });
    connection.onRequest(ConfigurationRequest.type, (params) => params.items.map((item) => (item.section === 'stark' ? section : null)));
    connection.onRequest(ApplyWorkspaceEditRequest.type, (params) => {
        session.edits.push(params);
        applyToDisk(params);
        return { applied: true };
    });
    connection.onNotification(ShowMessageNotification.type, (params) => {
        session.messages.push(params.message);
    });
    // Requests VS Code simply accepts.
    for (const method of ['client/registerCapability', 'client/unregisterCapability', 'workspace/codeLens/refresh', 'workspace/diagnostic/refresh']) {
        connection.onRequest(method, () => null);
    }
    connection.listen();

    // A server that dies must fail the test with its stderr, not leave a promise pending forever.
    const died = new Promise<never>((_, reject) => {
        child.once('exit', (code, signal) =>
            reject(new Error(`the server exited (${code ?? signal}) before answering initialize:\n${stderr.join('').slice(-3000)}`)),
        );
        child.once('error', (error) => reject(new Error(`cannot start ${PYTHON}: ${error.message}`)));
    });
    const root = pathToFileURL(workspace).toString();
    const initialize = connection.sendRequest(InitializeRequest.type, {
        processId: process.pid,
        clientInfo: { name: 'stark-vscode-smoke' },
        rootUri: root,
        workspaceFolders: [{ uri: root, name: 'ws' }],
        capabilities: CAPABILITIES,
        initializationOptions: section,
    });
    const result = await withTimeout(Promise.race([initialize, died]), 60_000, 'the initialize answer');
    died.catch(() => undefined); // later exits are checked by stopServer
    const commands = result.capabilities.executeCommandProvider?.commands ?? [];
    for (const command of ['stark.optimize', 'stark.debug', 'stark.cancel', 'stark.applyBest', 'stark.jobs', 'stark.watch', 'stark.unwatch']) {
        assert.ok(commands.includes(command), `server does not declare ${command} (declares ${commands.join(', ')})`);
    }
    await connection.sendNotification(InitializedNotification.type, {});
    return session;
}

/** Do what VS Code does with an accepted edit: create the file, then put the text in it. */
function applyToDisk(params: ApplyWorkspaceEditParams): void {
    for (const change of params.edit.documentChanges ?? []) {
        if (CreateFile.is(change)) {
            const file = fileURLToPath(change.uri);
            if (!fs.existsSync(file) || change.options?.overwrite) {
                fs.writeFileSync(file, '');
            }
        } else if (TextDocumentEdit.is(change)) {
            const file = fileURLToPath(change.textDocument.uri);
            const only = change.edits[0];
            assert.ok(change.edits.length === 1 && only !== undefined && 'newText' in only, 'expected one whole-file text edit');
            fs.writeFileSync(file, only.newText);
        }
    }
}

async function stopServer(session: Session): Promise<void> {
    const exited = new Promise<number | null>((resolve) => session.process.once('exit', (code) => resolve(code)));
    try {
        await withTimeout(session.connection.sendRequest(ShutdownRequest.type), 30_000, 'shutdown');
        await session.connection.sendNotification(ExitNotification.type);
        const code = await withTimeout(exited, 30_000, 'server exit');
        assert.equal(code, 0, `server exited with ${code}: ${session.stderr.join('')}`);
    } finally {
        session.connection.dispose();
        if (session.process.exitCode === null) {
            session.process.kill('SIGKILL');
        }
    }
}

async function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
    });
    try {
        return await Promise.race([promise, timeout]);
    } finally {
        clearTimeout(timer);
    }
}

async function waitFor<T>(probe: () => T | undefined, ms: number, what: string, session: Session): Promise<T> {
    const deadline = Date.now() + ms;
    for (;;) {
        const value = probe();
        if (value !== undefined) {
            return value;
        }
        if (Date.now() > deadline || session.process.exitCode !== null) {
            const last = session.updates.slice(-3).map((u) => JSON.stringify(u).slice(0, 300));
            throw new Error(`timed out waiting for ${what}; last updates: ${last.join('\n')}; stderr: ${session.stderr.join('').slice(-2000)}`);
        }
        await new Promise((resolve) => setTimeout(resolve, 100));
    }
}

function execute(session: Session, command: string, argument: unknown): Promise<unknown> {
    return session.connection.sendRequest(ExecuteCommandRequest.type, { command, arguments: [argument] });
}

describe('the real STARK language server, as the extension drives it', () => {
    let workspace: string;

    before(() => {
        workspace = fs.mkdtempSync(path.join(os.tmpdir(), 'stark-vscode-smoke-'));
    });
    after(() => {
        fs.rmSync(workspace, { recursive: true, force: true });
    });

    it('optimizes with the offline agent, reports progress and jobs, and applies the best kernel', { timeout: JOB_TIMEOUT_MS + 60_000 }, async () => {
        const reference = path.join(workspace, 'tiny.py');
        fs.writeFileSync(reference, TINY_REFERENCE);
        const session = await startServer(workspace, { agent: 'offline', device: 'cpu', rounds: 2, trust: true });
        try {
            const uri = pathToFileURL(reference).toString();
            const answer = (await execute(session, 'stark.optimize', { uri, rounds: 2 })) as { jobId?: unknown };
            assert.ok(typeof answer.jobId === 'string' || typeof answer.jobId === 'number', `no jobId in ${JSON.stringify(answer)}`);
            const jobId = answer.jobId;

            const job = await waitFor(
                () => {
                    const j = session.model.get(jobId);
                    return j !== undefined && ['done', 'failed', 'cancelled'].includes(j.state) ? j : undefined;
                },
                JOB_TIMEOUT_MS,
                `job ${String(jobId)} to finish`,
                session,
            );
            assert.equal(job.state, 'done', `job ended ${job.state}: ${job.error ?? ''}\n${session.stderr.join('').slice(-2000)}`);
            assert.equal(job.uri, uri);
            assert.equal(job.round, 2);
            assert.equal(job.rounds, 2);

            // the states the tree view went through, in order, ending in done
            const states = session.updates
                .filter((u) => (u as { jobId: unknown }).jobId === jobId)
                .map((u) => (u as { state: string }).state);
            assert.ok(states.includes('running'), `states: ${states.join(' ')}`);
            assert.equal(states.at(-1), 'done');
            assert.ok(states.indexOf('running') < states.indexOf('done'));

            // the tree the view renders: nodes with phases and rounds, a best node to apply
            assert.ok(job.tree.length >= 2, `tree: ${JSON.stringify(job.tree)}`);
            assert.ok(job.tree.some((n) => n.phase === 'seed'));
            const best = bestNode(job);
            assert.ok(best !== undefined, 'no correct candidate to apply');
            assert.match(nodeLabel(best), /^round \d+ · (seed|optimize|debug) · \d+\.\d\dx$/);
            assert.ok(canApply(job));

            // work-done progress: begin, report(s), end
            const reports = [...session.progress.values()].find((values) => values.some((v) => v.kind === 'begin'));
            assert.ok(reports !== undefined, 'no work-done progress was created');
            assert.equal(reports[0]?.kind, 'begin');
            assert.ok(reports.some((v) => v.kind === 'report'), `progress: ${JSON.stringify(reports)}`);
            await waitFor(() => (reports.at(-1)?.kind === 'end' ? true : undefined), 10_000, 'progress end', session);

            // stark.jobs lists the job (the extension syncs from it after a restart)
            const listed = (await execute(session, 'stark.jobs', {})) as { jobs?: unknown[] } | unknown[];
            const jobs = Array.isArray(listed) ? listed : (listed.jobs ?? []);
            assert.ok(jobs.some((j) => (j as { jobId: unknown }).jobId === jobId));

            // apply: a confirmed edit that creates <name>_stark.py next to the reference
            const applied = await execute(session, 'stark.applyBest', { jobId });
            assert.equal(session.edits.length, 1, `applyBest answered ${JSON.stringify(applied)} without an edit`);
            const edit = session.edits[0]!.edit;
            const target = path.join(workspace, 'tiny_stark.py');
            const targetUri = pathToFileURL(target).toString();
            const create = (edit.documentChanges ?? []).find((c) => CreateFile.is(c));
            assert.ok(create && CreateFile.is(create) && create.uri === targetUri, `edit: ${JSON.stringify(edit)}`);
            const annotations = Object.values(edit.changeAnnotations ?? {});
            assert.ok(annotations.some((a) => a.needsConfirmation === true), 'the edit should ask for confirmation (a diff preview)');
            assert.ok(fs.existsSync(target));
            const kernel = fs.readFileSync(target, 'utf8');
            assert.match(kernel, /class ModelNew/);
            assert.match(kernel, /# stark: reference=tiny\.py/);
        } finally {
            await stopServer(session);
        }
    });

    it('refuses jobs in an untrusted workspace with an explanation, and runs none of its code', { timeout: 60_000 }, async () => {
        const untrusted = fs.mkdtempSync(path.join(os.tmpdir(), 'stark-vscode-untrusted-'));
        const reference = path.join(untrusted, 'untrusted.py');
        fs.writeFileSync(reference, TINY_REFERENCE);
        // A decoy `stark_lsp` package in the folder: `python -m stark_lsp` started there would
        // run it, were the working directory on sys.path.
        const marker = path.join(untrusted, 'decoy-ran');
        fs.mkdirSync(path.join(untrusted, 'stark_lsp'));
        fs.writeFileSync(path.join(untrusted, 'stark_lsp', '__init__.py'), '');
        fs.writeFileSync(
            path.join(untrusted, 'stark_lsp', '__main__.py'),
            `open(${JSON.stringify(marker)}, "w").write("ran")\nraise SystemExit(3)\n`,
        );
        const session = await startServer(untrusted, { agent: 'offline', device: 'cpu', rounds: 2, trust: false });
        try {
            assert.ok(!fs.existsSync(marker), 'the workspace decoy ran instead of the installed server');
            const uri = pathToFileURL(reference).toString();
            await assert.rejects(execute(session, 'stark.optimize', { uri }), /not trusted/);
            await assert.rejects(execute(session, 'stark.cancel', { jobId: 'no-such-job' }), /no-such-job|unknown/i);
            const listed = (await execute(session, 'stark.jobs', {})) as { jobs?: unknown[] } | unknown[];
            assert.deepEqual(Array.isArray(listed) ? listed : listed.jobs, []);
        } finally {
            await stopServer(session);
            fs.rmSync(untrusted, { recursive: true, force: true });
        }
    });
});
