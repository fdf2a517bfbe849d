// Package tokenizer turns text into token ids and back for LLaMA-family
// GGUF models, matching llama.cpp (src/llama-vocab.cpp) token for token.
//
// New reads the vocabulary from a file's tokenizer.ggml.* metadata and picks
// the algorithm by tokenizer.ggml.model:
//
//   - "llama": SentencePiece-style tokenization (spm.go): score-driven
//     merges, byte fallback to <0xNN> tokens, a space prefix, and spaces
//     written as U+2581;
//   - "gpt2": byte-level BPE (bpe.go) with ranked merges and a
//     pre-tokenizer chosen by tokenizer.ggml.pre (pretokenize.go).
//
// WordPiece ("bert"), Unigram ("t5") and RWKV vocabularies are reported as
// *UnsupportedError.
//
// Before either algorithm runs, special tokens written in the text are
// split out (special.go). Decode, Piece and StreamDecoder go the other way
// (decode.go, stream.go).
//
// # Concurrency
//
// A *Tokenizer is immutable after New and may be used by any number of
// goroutines at once. Each Encode call takes its own scratch space from a
// pool; a StreamDecoder belongs to one goroutine.
//
// # Invalid UTF-8
//
// llama.cpp rejects text that is not valid UTF-8 in BPE vocabularies. Here
// every invalid byte is kept as a piece of its own and encoded through the
// byte-level mapping (BPE) or byte fallback (SPM), so Encode never fails
// and Decode gives the bytes back.
package tokenizer

import (
	"sync"

	"github.com/m40llm/m40llm/gguf"
)

// Tokenizer encodes and decodes text with one model's vocabulary.
type Tokenizer struct {
	v        *vocab
	algo     algorithm
	sessions sync.Pool // of *encodeState
}

// algorithm is one tokenization algorithm: immutable data built at load
// time, which hands out sessions holding per-call scratch.
type algorithm interface {
	newSession() session
}

// session tokenizes raw text fragments. prevSpecial tells whether the
// fragment follows a special token or starts the text (SPM then adds its
// space prefix).
type session interface {
	tokenize(text string, prevSpecial bool, out []int32) []int32
}

// encodeState is the scratch of one Encode call.
type encodeState struct {
	sess       session
	frags, tmp []fragment
}

// New builds the tokenizer described by md's tokenizer.ggml.* keys. It
// returns a *MetadataError when keys are missing or malformed and an
// *UnsupportedError (errors.Is(err, ErrUnsupported)) for tokenizer models
// and pre-tokenizers that are not implemented.
func New(md *gguf.Metadata) (*Tokenizer, error) {
	model, err := md.String(keyModel)
	if err != nil {
		return nil, &MetadataError{Key: keyModel, Err: err}
	}
	t := &Tokenizer{}
	switch model {
	case "llama":
		if t.v, err = loadVocab(md, kindSPM, nil); err != nil {
			return nil, err
		}
		t.algo = newSPM(t.v)
	case "gpt2":
		preName := ""
		if md.Has(keyPre) {
			if preName, err = md.String(keyPre); err != nil {
				return nil, &MetadataError{Key: keyPre, Err: err}
			}
		}
		pre, err := lookupPre(preName)
		if err != nil {
			return nil, err
		}
		merges, err := md.Strings(keyMerges)
		if err != nil {
			return nil, &MetadataError{Key: keyMerges, Err: err}
		}
		if t.v, err = loadVocab(md, kindBPE, pre); err != nil {
			return nil, err
		}
		if t.algo, err = newBPE(t.v, pre, merges); err != nil {
			return nil, err
		}
	case "bert":
		return nil, &UnsupportedError{Key: keyModel, Value: model, Reason: "WordPiece (BERT) tokenizer"}
	case "t5":
		return nil, &UnsupportedError{Key: keyModel, Value: model, Reason: "Unigram (T5) tokenizer"}
	case "rwkv":
		return nil, &UnsupportedError{Key: keyModel, Value: model, Reason: "RWKV tokenizer"}
	case "no_vocab", "none":
		return nil, &UnsupportedError{Key: keyModel, Value: model, Reason: "the model has no vocabulary"}
	default:
		return nil, &UnsupportedError{Key: keyModel, Value: model, Reason: "unknown tokenizer model"}
	}
	t.sessions.New = func() any { return &encodeState{sess: t.algo.newSession()} }
	return t, nil
}

// Encode returns the token ids of text, as llama.cpp's llama_tokenize.
//
// With addSpecial, the BOS token is put first when the vocabulary asks for
// it (AddBOS) and the EOS token last when it asks for that (AddEOS).
// With parseSpecial, control tokens written in the text ("<s>",
// "<|im_start|>") become their ids; without it only user-defined tokens
// do, and control tokens are tokenized as plain text.
func (t *Tokenizer) Encode(text string, addSpecial, parseSpecial bool) []int32 {
	es := t.sessions.Get().(*encodeState)
	defer t.sessions.Put(es)
	v := t.v
	es.frags, es.tmp = v.partition(text, parseSpecial, es.frags, es.tmp)
	out := make([]int32, 0, len(text)/3+2)
	if addSpecial && v.addBOS && v.bos >= 0 {
		out = append(out, v.bos)
	}
	prevSpecial := true
	for _, f := range es.frags {
		if f.id >= 0 {
			out = append(out, f.id)
			prevSpecial = true
			continue
		}
		out = es.sess.tokenize(text[f.off:f.off+f.n], prevSpecial, out)
		prevSpecial = false
	}
	if addSpecial && v.addEOS && v.eos >= 0 {
		out = append(out, v.eos)
	}
	return out
}

// Piece returns the vocabulary text of id as stored in the file (with
// U+2581 for spaces, byte-level code points, "<0x0A>", "<s>"), or "" for an
// id outside the vocabulary.
func (t *Tokenizer) Piece(id int32) string {
	if id < 0 || int(id) >= len(t.v.tokens) {
		return ""
	}
	return t.v.tokens[id]
}

// TokenID returns the id of the token whose vocabulary text is piece.
func (t *Tokenizer) TokenID(piece string) (int32, bool) {
	id, ok := t.v.ids[piece]
	return id, ok
}

// Type returns the token type of id as llama.cpp uses it: the file's
// tokenizer.ggml.token_type, except that tokens recognised as end of turn,
// end of generation or fill-in-the-middle by their text are control
// tokens. An id outside the vocabulary is TypeUndefined.
func (t *Tokenizer) Type(id int32) TokenType {
	if id < 0 || int(id) >= len(t.v.attrs) {
		return TypeUndefined
	}
	a := t.v.attrs[id]
	switch {
	case a&attrNormal != 0:
		return TypeNormal
	case a&attrUnknown != 0:
		return TypeUnknown
	case a&attrControl != 0:
		return TypeControl
	case a&attrUserDefined != 0:
		return TypeUserDefined
	case a&attrUnused != 0:
		return TypeUnused
	case a&attrByte != 0:
		return TypeByte
	}
	return TypeUndefined
}

// VocabSize returns the number of tokens.
func (t *Tokenizer) VocabSize() int { return len(t.v.tokens) }

// BOS returns the beginning-of-sequence token, or -1 when there is none.
// Without tokenizer.ggml.bos_token_id it is llama.cpp's default: 1 for
// SentencePiece and 11 for BPE vocabularies.
func (t *Tokenizer) BOS() int32 { return t.v.bos }

// EOS returns the end-of-sequence token, or -1 when there is none, with
// the same defaults as BOS (2 for SentencePiece, 11 for BPE).
func (t *Tokenizer) EOS() int32 { return t.v.eos }

// EOT returns the end-of-turn token (tokenizer.ggml.eot_token_id, or a
// token such as "<|eot_id|>" or "<|im_end|>" found by its text), or -1.
func (t *Tokenizer) EOT() int32 { return t.v.eot }

// UNK returns the unknown token, or -1 when there is none.
func (t *Tokenizer) UNK() int32 { return t.v.unk }

// AddBOS reports whether Encode with addSpecial puts BOS first.
func (t *Tokenizer) AddBOS() bool { return t.v.addBOS && t.v.bos >= 0 }

// AddEOS reports whether Encode with addSpecial puts EOS last.
func (t *Tokenizer) AddEOS() bool { return t.v.addEOS && t.v.eos >= 0 }

// IsEOG reports whether id ends generation: EOS, EOT, EOM, the
// fill-in-the-middle pad/repo/separator tokens, and tokens named
// <|eot_id|>, <|im_end|>, <|end|>, <end_of_turn>, <|endoftext|>,
// <|eom_id|> or <EOT>, as llama.cpp's vocabulary loader marks them.
func (t *Tokenizer) IsEOG(id int32) bool { return t.v.eog[id] }

// IsControl reports whether id is a control token (see Type).
func (t *Tokenizer) IsControl(id int32) bool {
	return id >= 0 && int(id) < len(t.v.attrs) && t.v.attrs[id]&attrControl != 0
}
