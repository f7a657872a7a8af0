/**
 * Commands. The server's `executeCommand` ids (stark.optimize, stark.debug, stark.cancel,
 * stark.applyBest, stark.jobs, stark.watch, stark.unwatch) are registered by
 * vscode-languageclient itself; menus, the tree and buttons call those same ids, and
 * `executeCommandMiddleware` turns whatever VS Code passes (a file Uri from a menu, a tree
 * element, nothing from the palette) into the single JSON object the server expects. It is
 * also where Restricted Mode refuses jobs. The client-side commands get their own ids.
 */
import * as vscode from 'vscode';
import type { ExecuteCommandSignature, LanguageClient } from 'vscode-languageclient/node';

import { openCandidate, showCandidateDiff } from './diff';
import { type Job, type JobsModel, bestNode, canApply, isActive, jobDescription, jobLabel } from './jobsModel';
import { allowCommand } from './trust';
import { type SearchElement, isSearchElement } from './treeView';

/** The server's command ids, registered by the language client. */
export const SERVER_COMMANDS = [
    'stark.optimize',
    'stark.debug',
    'stark.verify',
    'stark.cancel',
    'stark.applyBest',
    'stark.applyFix',
    'stark.jobs',
    'stark.watch',
    'stark.unwatch',
    'stark.serverInfo',
] as const;

const FILE_COMMANDS: ReadonlySet<string> = new Set(['stark.optimize', 'stark.debug', 'stark.verify', 'stark.watch', 'stark.unwatch']);

type ToProtocolUri = (uri: vscode.Uri) => string;

/** An argument already shaped for the server: a plain JSON object (code lenses, buttons, API). */
function isProtocolArgument(value: unknown): boolean {
    return (
        typeof value === 'object' &&
        value !== null &&
        !Array.isArray(value) &&
        !(value instanceof vscode.Uri) &&
        !isSearchElement(value)
    );
}

function describeJob(job: Job): vscode.QuickPickItem & { job: Job } {
    return { label: jobLabel(job), description: jobDescription(job), detail: vscode.Uri.parse(job.uri).fsPath, job };
}

async function pickJob(jobs: Job[], placeHolder: string, none: string): Promise<Job | undefined> {
    if (jobs.length === 0) {
        void vscode.window.showInformationMessage(`STARK: ${none}`);
        return undefined;
    }
    if (jobs.length === 1) {
        return jobs[0];
    }
    return (await vscode.window.showQuickPick(jobs.map(describeJob), { placeHolder }))?.job;
}

/** The job a command is about: a tree element's, a file's latest, or the user's pick. */
async function resolveJob(
    model: JobsModel,
    arg: unknown,
    candidates: (job: Job) => boolean,
    placeHolder: string,
    none: string,
): Promise<Job | undefined> {
    if (isSearchElement(arg)) {
        const job = model.byKey(arg.job);
        if (job?.stale) {
            // The new server may reuse this id for another job: never send it.
            void vscode.window.showWarningMessage(
                `STARK: ${jobLabel(job)} ran on a language server that has since restarted; it can be viewed and diffed, no longer changed.`,
            );
            return undefined;
        }
        return job;
    }
    const uri = arg instanceof vscode.Uri ? arg : vscode.window.activeTextEditor?.document.uri;
    const jobs = model.jobs().filter((j) => !j.stale && candidates(j));
    const forFile = uri === undefined ? [] : jobs.filter((j) => j.uri === uri.toString() || j.referenceUri === uri.toString());
    return forFile.length > 0 ? forFile[0] : pickJob(jobs, placeHolder, none); // newest first
}

function resolveFileUri(model: JobsModel, command: string, arg: unknown): vscode.Uri | undefined {
    let uri: vscode.Uri | undefined;
    if (arg instanceof vscode.Uri) {
        uri = arg;
    } else if (typeof arg === 'string') {
        uri = vscode.Uri.parse(arg);
    } else if (isSearchElement(arg)) {
        const job = model.byKey(arg.job);
        uri = job && vscode.Uri.parse(command === 'stark.optimize' ? job.referenceUri : job.uri);
    } else {
        uri = vscode.window.activeTextEditor?.document.uri;
    }
    if (uri === undefined) {
        void vscode.window.showWarningMessage(
            'STARK: open a Python file first: a reference that defines `Model`, or a kernel that defines `ModelNew`.',
        );
        return undefined;
    }
    if (uri.scheme !== 'file') {
        void vscode.window.showWarningMessage(`STARK works on files on disk, not ${uri.scheme}: documents.`);
        return undefined;
    }
    return uri;
}

/** Turn VS Code's command arguments into the server's single JSON object (undefined: do not send). */
export async function serverArguments(
    command: string,
    args: unknown[],
    model: JobsModel,
    toProtocol: ToProtocolUri,
): Promise<unknown[] | undefined> {
    const first = args[0];
    if (isProtocolArgument(first)) {
        return args;
    }
    if (FILE_COMMANDS.has(command)) {
        const uri = resolveFileUri(model, command, first);
        return uri === undefined ? undefined : [{ uri: toProtocol(uri) }];
    }
    if (command === 'stark.cancel') {
        const job = await resolveJob(model, first, isActive, 'Which job should stop?', 'no job is running.');
        return job === undefined ? undefined : [{ jobId: job.jobId }];
    }
    if (command === 'stark.applyBest') {
        const job = await resolveJob(model, first, canApply, 'Apply the best kernel of which job?', 'no finished job has a kernel to apply.');
        return job === undefined ? undefined : [{ jobId: job.jobId }];
    }
    if (command === 'stark.applyFix') {
        const job = await resolveJob(
            model,
            first,
            (j) => j.kind === 'debug' && j.fixAvailable && !j.stale,
            'Apply the fix of which debug job?',
            'no debug job has a fix to apply.',
        );
        return job === undefined ? undefined : [{ jobId: job.jobId }];
    }
    return args.length > 0 ? args : [{}];
}

/** `middleware.executeCommand` for the language client. */
export function executeCommandMiddleware(model: JobsModel, client: () => LanguageClient | undefined) {
    return async (command: string, args: unknown[], next: ExecuteCommandSignature): Promise<unknown> => {
        if (!allowCommand(command)) {
            return undefined;
        }
        const converter = client()?.code2ProtocolConverter;
        const toProtocol: ToProtocolUri = (uri) => (converter ? converter.asUri(uri) : uri.toString());
        const serverArgs = await serverArguments(command, args, model, toProtocol);
        if (serverArgs === undefined) {
            return undefined;
        }
        try {
            return await next(command, serverArgs);
        } catch (error) {
            const message = error instanceof Error ? error.message : String(error);
            void vscode.window.showErrorMessage(`STARK: ${message}`);
            return undefined;
        }
    };
}

/** The node a diff/open command is about: a node element, a job's best, or a pick. */
async function resolveNode(model: JobsModel, arg: unknown): Promise<{ job: Job; nodeId: number } | undefined> {
    // Viewing is fine for any job, a restarted server's included.
    if (isSearchElement(arg)) {
        const job = model.byKey(arg.job);
        const nodeId = arg.kind === 'node' ? arg.nodeId : job && bestNode(job)?.id;
        return job && nodeId !== undefined ? { job, nodeId } : undefined;
    }
    const job = await resolveJob(
        model,
        arg,
        (j) => bestNode(j) !== undefined,
        'Compare the best kernel of which job?',
        'no job has a correct kernel to compare yet.',
    );
    const best = job && bestNode(job);
    return job && best && { job, nodeId: best.id };
}

export interface ClientCommandHandlers {
    showLog(): void;
    restartServer(): Promise<void>;
    setApiKey(): Promise<void>;
}

/** Register the client-side commands (ids the server does not own). */
export function registerClientCommands(model: JobsModel, handlers: ClientCommandHandlers): vscode.Disposable[] {
    const withNode = (action: (job: Job, nodeId: number) => Promise<void>) => async (arg?: unknown) => {
        const target = await resolveNode(model, arg);
        const node = target && target.job.tree.find((n) => n.id === target.nodeId);
        if (target && node) {
            await action(target.job, node.id);
        }
    };
    return [
        vscode.commands.registerCommand(
            'stark.showDiff',
            withNode(async (job, nodeId) => showCandidateDiff(job, job.tree.find((n) => n.id === nodeId)!)),
        ),
        vscode.commands.registerCommand(
            'stark.openCandidate',
            withNode(async (job, nodeId) => openCandidate(job, job.tree.find((n) => n.id === nodeId)!)),
        ),
        vscode.commands.registerCommand('stark.setApiKey', () => handlers.setApiKey()),
        vscode.commands.registerCommand('stark.restartServer', () => handlers.restartServer()),
        vscode.commands.registerCommand('stark.showLog', () => handlers.showLog()),
        vscode.commands.registerCommand('stark.clearFinishedJobs', () => model.clearFinished()),
    ];
}

/** Keep the `when`-clause context keys of package.json's menus in step with the model. */
export function trackContextKeys(model: JobsModel): { dispose(): void } {
    const update = () => {
        const jobs = model.jobs();
        void vscode.commands.executeCommand('setContext', 'stark.hasActiveJobs', jobs.some(isActive));
        void vscode.commands.executeCommand('setContext', 'stark.hasFinishedJobs', jobs.some((j) => !isActive(j)));
    };
    update();
    return model.onDidChange(update);
}

export type { SearchElement };
