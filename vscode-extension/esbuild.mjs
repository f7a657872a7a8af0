// Bundle the extension into one file (dist/extension.js), so the .vsix ships no node_modules.
import * as esbuild from 'esbuild';

const production = process.argv.includes('--production');
const watch = process.argv.includes('--watch');

const options = {
    entryPoints: ['src/extension.ts'],
    bundle: true,
    format: 'cjs',
    platform: 'node',
    target: 'node20',
    outfile: 'dist/extension.js',
    external: ['vscode'],
    sourcemap: !production,
    minify: production,
    logLevel: 'warning',
};

/** Lines the VS Code watch task (.vscode/tasks.json) waits for. */
const watchMarkers = {
    name: 'watch-markers',
    setup(build) {
        build.onStart(() => console.log('[watch] build started'));
        build.onEnd((result) => {
            for (const { text, location } of result.errors) {
                console.error(`✘ [ERROR] ${text}${location ? ` (${location.file}:${location.line})` : ''}`);
            }
            console.log('[watch] build finished');
        });
    },
};

if (watch) {
    const context = await esbuild.context({ ...options, plugins: [watchMarkers] });
    await context.watch();
} else {
    await esbuild.build(options);
}
