// The dependency rules of docs/ARCHITECTURE.md, checked against what the packages declare and import.
// The rules live in test/dependency-rules.json; the doc's layer list must match it.
import fs from 'node:fs';
import { builtinModules } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

interface Rules {
  layers: Array<Record<string, string[]>>;
}
const rules = JSON.parse(fs.readFileSync(path.join(root, 'test', 'dependency-rules.json'), 'utf8')) as Rules;

interface Manifest {
  name: string;
  dependencies?: Record<string, string>;
  devDependencies?: Record<string, string>;
  peerDependencies?: Record<string, string>;
  optionalDependencies?: Record<string, string>;
}

interface WorkspacePackage {
  dir: string;
  manifest: Manifest;
  declared: Set<string>;
}

/** The workspace's packages, from the folders pnpm-workspace.yaml names (`dir` and `dir/*` forms). */
function workspacePackages(): Map<string, WorkspacePackage> {
  const yaml = fs.readFileSync(path.join(root, 'pnpm-workspace.yaml'), 'utf8');
  const patterns = [...yaml.matchAll(/^\s+-\s+['"]?([^'"\s]+)['"]?\s*$/gm)].map((m) => m[1]!);
  const dirs = patterns.flatMap((pattern) => {
    if (!pattern.endsWith('/*')) return [pattern];
    const parent = pattern.slice(0, -2);
    return fs.readdirSync(path.join(root, parent)).map((name) => `${parent}/${name}`);
  });
  const found = new Map<string, WorkspacePackage>();
  for (const dir of dirs) {
    const file = path.join(root, dir, 'package.json');
    if (!fs.existsSync(file)) continue;
    const manifest = JSON.parse(fs.readFileSync(file, 'utf8')) as Manifest;
    const declared = new Set(
      [manifest.dependencies, manifest.devDependencies, manifest.peerDependencies, manifest.optionalDependencies].flatMap((deps) => Object.keys(deps ?? {})),
    );
    found.set(manifest.name, { dir, manifest, declared });
  }
  return found;
}

function sourceFiles(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  return fs
    .readdirSync(dir, { recursive: true, encoding: 'utf8' })
    .filter((name) => /\.[cm]?ts$/.test(name))
    .map((name) => path.join(dir, name));
}

// ts.preProcessFile finds static and dynamic imports, re-exports, import types and require(); require.resolve
// (how transport finds the agent's bundle and the addon) is a call it does not report.
const RESOLVE_CALL = /(?:\brequire|\))\.resolve\(\s*['"]([^'"]+)['"]/g;

function specifiers(file: string): string[] {
  const text = fs.readFileSync(file, 'utf8');
  const imported = ts.preProcessFile(text, true, true).importedFiles.map((ref) => ref.fileName);
  return [...imported, ...[...text.matchAll(RESOLVE_CALL)].map((m) => m[1]!)];
}

/** The package a bare specifier names (`@scope/name/sub` -> `@scope/name`), or null for relative and builtin ones. */
function packageOf(specifier: string): string | null {
  if (specifier.startsWith('.') || specifier.startsWith('/')) return null;
  if (specifier.startsWith('node:') || builtinModules.includes(specifier.split('/')[0]!)) return null;
  const parts = specifier.split('/');
  return specifier.startsWith('@') ? parts.slice(0, 2).join('/') : parts[0]!;
}

const packages = workspacePackages();
const layerOf = new Map<string, number>();
const allowed = new Map<string, Set<string>>();
rules.layers.forEach((layer, index) => {
  for (const [name, may] of Object.entries(layer)) {
    layerOf.set(name, index);
    allowed.set(name, new Set(may));
  }
});

describe('dependency rules (docs/ARCHITECTURE.md)', () => {
  it('name every workspace package once, and let each depend only on lower layers', () => {
    const problems: string[] = [];
    const seen = rules.layers.flatMap((layer) => Object.keys(layer));
    for (const name of packages.keys()) if (!layerOf.has(name)) problems.push(`${name} has no place in test/dependency-rules.json`);
    for (const name of new Set(seen)) {
      if (seen.filter((n) => n === name).length > 1) problems.push(`${name} is in more than one layer`);
      if (!packages.has(name)) problems.push(`${name} is in the rules but not in the workspace`);
    }
    for (const [name, may] of allowed) {
      for (const dep of may) {
        const depLayer = layerOf.get(dep);
        if (depLayer === undefined) problems.push(`${name} may depend on ${dep}, which the rules do not place`);
        else if (depLayer >= layerOf.get(name)!) problems.push(`${name} may depend on ${dep}, which is not in a lower layer`);
      }
    }
    expect(problems).toEqual([]);
  });

  it('allow every workspace dependency a package.json declares', () => {
    const problems: string[] = [];
    for (const [name, pkg] of packages) {
      for (const dep of pkg.declared) {
        if (packages.has(dep) && !allowed.get(name)?.has(dep)) problems.push(`${pkg.dir}/package.json: ${name} may not depend on ${dep}`);
      }
    }
    expect(problems).toEqual([]);
  });

  it('allow every import in src/, and every package imported is declared in package.json', () => {
    const problems: string[] = [];
    for (const [name, pkg] of packages) {
      for (const file of sourceFiles(path.join(root, pkg.dir, 'src'))) {
        const where = path.relative(root, file);
        for (const specifier of specifiers(file)) {
          const dep = packageOf(specifier);
          if (dep === null || dep === name) continue;
          if (packages.has(dep) && !allowed.get(name)?.has(dep)) problems.push(`${where}: ${name} may not import ${specifier}`);
          if (!pkg.declared.has(dep)) problems.push(`${where}: imports ${specifier}, which ${pkg.dir}/package.json does not declare`);
        }
      }
    }
    expect(problems).toEqual([]);
  });

  it('are the layers docs/ARCHITECTURE.md lists', () => {
    const doc = fs.readFileSync(path.join(root, 'docs', 'ARCHITECTURE.md'), 'utf8');
    const section = doc.split(/^## Dependency rules$/m)[1] ?? '';
    const block = /```\n([\s\S]*?)```/.exec(section)?.[1] ?? '';
    const listed = block
      .split('\n')
      .filter((line) => /^\d+\s/.test(line))
      .map((line) =>
        line
          .replace(/^\d+\s+/, '')
          .replace(/\([^)]*\)/g, '')
          .split(/\s+/)
          .filter(Boolean)
          .map((short) => (short === 'skysync' ? short : `@skysync/${short}`))
          .sort(),
      );
    expect(listed).toEqual(rules.layers.map((layer) => Object.keys(layer).sort()));
  });
});
