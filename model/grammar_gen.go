package model

import (
	"errors"
	"math"
	"sync"

	"github.com/m40llm/m40llm/model/grammar"
	"github.com/m40llm/m40llm/model/tokenizer"
)

// ErrGrammarDeadEnd is matched by the error of a generation whose grammar
// allowed no token of the vocabulary (and no end of generation) at some
// step: the grammar needs text the vocabulary cannot spell.
var ErrGrammarDeadEnd = errors.New("the grammar allows no token here")

var grammarVocabs sync.Map // *tokenizer.Tokenizer → *grammar.Vocab

// GrammarVocab returns the vocabulary prepared for grammar masks: each
// token's bytes (tokenizer.TokenBytes) for normal, user-defined and byte
// tokens, and nothing for control, unknown and unused tokens, which a
// grammar never allows (end-of-generation tokens are allowed when the
// grammar accepts). It is built once per tokenizer.
func GrammarVocab(tok *tokenizer.Tokenizer) *grammar.Vocab {
	if v, ok := grammarVocabs.Load(tok); ok {
		return v.(*grammar.Vocab)
	}
	toks := make([]string, tok.VocabSize())
	for id := range toks {
		switch tok.Type(int32(id)) {
		case tokenizer.TypeNormal, tokenizer.TypeUserDefined, tokenizer.TypeByte:
			toks[id] = tok.TokenBytes(int32(id))
		}
	}
	v, _ := grammarVocabs.LoadOrStore(tok, grammar.NewVocab(toks))
	return v.(*grammar.Vocab)
}

// constrain copies logits into g.masked with every token the grammar does
// not allow at -Inf; end-of-generation tokens stay only when the grammar
// accepts the text so far. It reports whether any token is left.
func (g *Generation) constrain(logits []float32) ([]float32, bool) {
	g.mask = g.gm.Mask(g.gv, g.mask)
	g.masked = append(g.masked[:0], logits...)
	accept := g.gm.Accepting()
	any := false
	negInf := float32(math.Inf(-1))
	for id := range g.masked {
		ok := grammar.Allowed(g.mask, int32(id)) || accept && g.tok.IsEOG(int32(id))
		if !ok {
			g.masked[id] = negInf
		} else {
			any = true
		}
	}
	return g.masked, any
}
