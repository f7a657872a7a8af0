/**
 * Entry point: wires the jobs model to its views (tree, status bar, notifications), the
 * candidate content provider, the commands, and the language server that feeds them all.
 */
import * as vscode from 'vscode';

import { executeCommandMiddleware, registerClientCommands, trackContextKeys } from './commands';
import { CANDIDATE_SCHEME, CandidateContentProvider } from './diff';
import { JobsModel } from './jobsModel';
import { CompletionNotifier } from './notifications';
import { ApiKeyStore, RedactingLogChannel } from './secrets';
import { StarkServer } from './server';
import { JobStatusBar } from './statusBar';
import { SearchTreeProvider, VIEW_ID } from './treeView';

let server: StarkServer | undefined;

export function activate(context: vscode.ExtensionContext): void {
    const apiKeys = new ApiKeyStore(context.secrets);
    const log = new RedactingLogChannel(vscode.window.createOutputChannel('STARK', { log: true }), () => apiKeys.knownSecrets());
    const model = new JobsModel();
    const tree = new SearchTreeProvider(model);
    const statusBar = new JobStatusBar(model);

    server = new StarkServer({
        log,
        apiKeys,
        model,
        statusBar,
        middleware: { executeCommand: executeCommandMiddleware(model, () => server?.languageClient) },
    });
    const current = server;

    context.subscriptions.push(
        log,
        apiKeys,
        tree,
        statusBar,
        new CompletionNotifier(model),
        trackContextKeys(model),
        vscode.window.createTreeView(VIEW_ID, { treeDataProvider: tree, showCollapseAll: true }),
        vscode.workspace.registerTextDocumentContentProvider(CANDIDATE_SCHEME, new CandidateContentProvider()),
        ...registerClientCommands(model, {
            showLog: () => log.show(true),
            restartServer: () => current.restart('requested by the user', true),
            setApiKey: () => apiKeys.promptAndStore(),
        }),
    );
    void current.start(); // activation must not wait for the server
}

export async function deactivate(): Promise<void> {
    const running = server;
    server = undefined;
    await running?.dispose();
}
