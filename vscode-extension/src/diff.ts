/**
 * Read-only views of candidate kernels, and `vscode.diff` between the reference and a
 * candidate. Candidates live in the run's trace directory; showing them through a
 * `stark-candidate:` content provider keeps them read-only (editing a trace would make it
 * lie) and gives the editor tab a meaningful title.
 */
import * as path from 'node:path';
import * as vscode from 'vscode';

import { type CandidateNode, type Job, baseName, formatSpeedup, jobKey } from './jobsModel';

export const CANDIDATE_SCHEME = 'stark-candidate';

/** Absolute path of a node's code: its `kernelUri`, else its `code_path` (relative paths are
 *  taken from the reference's folder). */
export function resolveCodePath(job: Job, node: CandidateNode): string | undefined {
    if (node.kernelUri !== null) {
        const uri = vscode.Uri.parse(node.kernelUri);
        return uri.scheme === 'file' ? uri.fsPath : undefined;
    }
    if (node.codePath === null) {
        return undefined;
    }
    if (path.isAbsolute(node.codePath)) {
        return node.codePath;
    }
    return path.resolve(path.dirname(vscode.Uri.parse(job.referenceUri).fsPath), node.codePath);
}

/** `stark-candidate:/<job>/<node>/<file>?<path>`: the path rides in the query so the view still
 *  works after the job is cleared from the model. */
export function candidateUri(job: Job, node: CandidateNode, filePath: string): vscode.Uri {
    return vscode.Uri.from({
        scheme: CANDIDATE_SCHEME,
        path: `/job-${jobKey(job.jobId)}/node-${node.id}/${path.basename(filePath)}`,
        query: new URLSearchParams({ path: filePath }).toString(),
    });
}

export class CandidateContentProvider implements vscode.TextDocumentContentProvider {
    async provideTextDocumentContent(uri: vscode.Uri): Promise<string> {
        const filePath = new URLSearchParams(uri.query).get('path');
        if (filePath === null || filePath === '') {
            throw new Error(`STARK: ${uri.toString()} does not name a candidate file`);
        }
        try {
            const bytes = await vscode.workspace.fs.readFile(vscode.Uri.file(filePath));
            return new TextDecoder('utf-8').decode(bytes);
        } catch (error) {
            const reason = error instanceof Error ? error.message : String(error);
            throw new Error(`STARK: cannot read candidate kernel ${filePath}: ${reason}`, { cause: error });
        }
    }
}

export function diffTitle(job: Job, node: CandidateNode): string {
    const outcome = node.buggy ? 'buggy' : formatSpeedup(node.speedup);
    return `${baseName(job.referenceUri)} ↔ candidate #${node.id} (round ${node.round}, ${node.phase}, ${outcome})`;
}

/** Open `vscode.diff` with the reference on the left and the candidate on the right. */
export async function showCandidateDiff(job: Job, node: CandidateNode): Promise<void> {
    const filePath = resolveCodePath(job, node);
    if (filePath === undefined) {
        void vscode.window.showWarningMessage(`STARK: candidate #${node.id} has no code to compare (it failed before producing a kernel).`);
        return;
    }
    await vscode.commands.executeCommand(
        'vscode.diff',
        vscode.Uri.parse(job.referenceUri),
        candidateUri(job, node, filePath),
        diffTitle(job, node),
        { preview: true } satisfies vscode.TextDocumentShowOptions,
    );
}

export async function openCandidate(job: Job, node: CandidateNode): Promise<void> {
    const filePath = resolveCodePath(job, node);
    if (filePath === undefined) {
        void vscode.window.showWarningMessage(`STARK: candidate #${node.id} has no code (it failed before producing a kernel).`);
        return;
    }
    const document = await vscode.workspace.openTextDocument(candidateUri(job, node, filePath));
    await vscode.window.showTextDocument(document, { preview: true });
}
