// remark plugin: finds what was written as structure but renders as text
// (GitHub flavour): a table row cut off from its table, a heading without
// its space, a code fence never closed (the rest of the file becomes code).
import { visit } from 'unist-util-visit'

export default function renderedAsWritten () {
  return (tree, file) => {
    const source = String(file)
    const text = node => source.slice(node.position.start.offset, node.position.end.offset)
    visit(tree, 'paragraph', node => {
      if (text(node).split('\n').some(line => /^\s*\|.*\|\s*$/.test(line))) {
        file.message('a table row renders as text (a blank line splitting the table, or no header row?)', node, 'rendered-as-written:table')
      }
      if (/^#{1,6}[^\s#]/.test(text(node))) {
        file.message('a heading renders as text (no space after #)', node, 'rendered-as-written:heading')
      }
    })
    visit(tree, 'code', node => {
      const lines = text(node).trimEnd().split('\n')
      const fence = /^\s*(`{3,}|~{3,})/.exec(lines[0])
      if (fence && (lines.length < 2 || !lines[lines.length - 1].trim().startsWith(fence[1]))) {
        file.message('a code fence is never closed: the rest of the file renders as code', node, 'rendered-as-written:fence')
      }
    })
  }
}
