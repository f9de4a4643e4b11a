// `remark` (remark-cli) settings for the docs check in scripts/test.sh:
// GitHub-flavoured Markdown, every local link and #anchor resolves inside the
// repository (offline), and nothing written as structure renders as text.
import remarkGfm from 'remark-gfm'
import remarkValidateLinks from 'remark-validate-links'
import renderedAsWritten from './tools/remark-rendered-as-written.mjs'

export default {
  plugins: [remarkGfm, [remarkValidateLinks, { repository: false }], renderedAsWritten]
}
