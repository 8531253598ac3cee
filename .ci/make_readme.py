#!/usr/bin/env python3
"""Render nbs/index.ipynb to README.md without Quarto.

`nbdev_readme` needs the Quarto binary, which cannot be installed on the project's machines.
This script does the same job for the cells the README uses: markdown cells verbatim, visible
code cells as fenced Python with their text outputs, PNG outputs saved under `index_files/`.
Relative links (written for the docs site, relative to nbs/) get an `nbs/` prefix.
Cells carrying `#| hide` are dropped, and nbdev directives (`#| ...`) are stripped, as nbdev does.
Run from the repository root: `python .ci/make_readme.py` (`--check` exits 1 if README.md is stale).
"""
import base64, json, re, sys
from pathlib import Path

DIRECTIVE = re.compile(r'^\s*#\s*\|\s*(.*)$')
LINK = re.compile(r'\]\((?!https?:|#|/|mailto:)([^)\s]+)\)')   # relative to nbs/ in the notebook

def _directives(src):
    return [m.group(1).strip() for l in src.splitlines() if (m := DIRECTIVE.match(l))]

def render(nb_path=Path('nbs/index.ipynb'), files_dir=Path('index_files')):
    nb = json.loads(Path(nb_path).read_text())
    out, images = [], {}
    for i, cell in enumerate(nb['cells']):
        src = ''.join(cell['source'])
        dirs = _directives(src)
        if any(d.split()[0] in ('hide', 'exporti', 'export') for d in dirs if d): continue
        if cell['cell_type'] == 'markdown':
            out.append(LINK.sub(r'](nbs/\1)', src.strip())); continue
        code = '\n'.join(l for l in src.splitlines() if not DIRECTIVE.match(l)).strip()
        show_code = not any(d.startswith('echo: false') or d == 'echo:false' for d in dirs)
        if code and show_code: out.append(f'```python\n{code}\n```')
        for j, o in enumerate(cell.get('outputs', [])):
            data = o.get('data', {})
            if o.get('output_type') == 'stream': out.append('    ' + ''.join(o['text']).rstrip().replace('\n', '\n    '))
            elif 'image/png' in data:
                name = f'figure-commonmark/cell-{i}-output-{j}.png'
                images[name] = base64.b64decode(data['image/png'])
                out.append(f'![]({files_dir.as_posix()}/{name})')
            elif 'text/markdown' in data: out.append(''.join(data['text/markdown']).strip())
            elif 'text/plain' in data: out.append('    ' + ''.join(data['text/plain']).rstrip().replace('\n', '\n    '))
    text = '<!-- Generated from nbs/index.ipynb by .ci/make_readme.py: edit the notebook, not this file. -->\n\n'
    return text + '\n\n'.join(out) + '\n', images

def main(argv):
    text, images = render()
    if '--check' in argv:
        cur = Path('README.md').read_text() if Path('README.md').exists() else ''
        stale = cur != text or any(not (Path('index_files')/n).exists() or (Path('index_files')/n).read_bytes() != b for n, b in images.items())
        if stale: print('README.md is stale: run `python .ci/make_readme.py`'); return 1
        return 0
    Path('README.md').write_text(text)
    for n, b in images.items():
        p = Path('index_files')/n; p.parent.mkdir(parents=True, exist_ok=True); p.write_bytes(b)
    return 0

if __name__ == '__main__': sys.exit(main(sys.argv[1:]))
