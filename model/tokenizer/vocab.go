package tokenizer

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/m40llm/m40llm/gguf"
)

// Metadata keys read by New.
const (
	keyModel          = "tokenizer.ggml.model"
	keyPre            = "tokenizer.ggml.pre"
	keyTokens         = "tokenizer.ggml.tokens"
	keyScores         = "tokenizer.ggml.scores"
	keyTokenType      = "tokenizer.ggml.token_type"
	keyMerges         = "tokenizer.ggml.merges"
	keyAddBOS         = "tokenizer.ggml.add_bos_token"
	keyAddEOS         = "tokenizer.ggml.add_eos_token"
	keyAddSpacePrefix = "tokenizer.ggml.add_space_prefix"
	keyGeneralName    = "general.name"
)

// TokenType is the type of a vocabulary entry, as stored in
// tokenizer.ggml.token_type. The numeric values are part of the format.
type TokenType int32

// Token types of tokenizer.ggml.token_type.
const (
	TypeUndefined   TokenType = 0
	TypeNormal      TokenType = 1
	TypeUnknown     TokenType = 2
	TypeControl     TokenType = 3
	TypeUserDefined TokenType = 4
	TypeUnused      TokenType = 5
	TypeByte        TokenType = 6
)

// String returns the type's name ("normal", "control", ...).
func (t TokenType) String() string {
	switch t {
	case TypeUndefined:
		return "undefined"
	case TypeNormal:
		return "normal"
	case TypeUnknown:
		return "unknown"
	case TypeControl:
		return "control"
	case TypeUserDefined:
		return "user-defined"
	case TypeUnused:
		return "unused"
	case TypeByte:
		return "byte"
	}
	return "token_type(" + strconv.Itoa(int(t)) + ")"
}

// Token attributes, as llama.cpp derives them from the token type plus a
// few per-model rules. A token has one type bit and possibly strip bits.
const (
	attrUnknown uint16 = 1 << iota
	attrUnused
	attrNormal
	attrControl
	attrUserDefined
	attrByte
	attrLStrip // strip white space left of the token when it is parsed as special
	attrRStrip // strip white space right of it
)

// attrOfType maps a token type to its attribute; unknown values become 0
// (undefined), which decodes to nothing.
func attrOfType(t TokenType) uint16 {
	switch t {
	case TypeNormal:
		return attrNormal
	case TypeUnknown:
		return attrUnknown
	case TypeControl:
		return attrControl
	case TypeUserDefined:
		return attrUserDefined
	case TypeUnused:
		return attrUnused
	case TypeByte:
		return attrByte
	}
	return 0
}

// modelKind is the tokenization algorithm.
type modelKind int

const (
	kindSPM modelKind = iota // "llama": SentencePiece-style, score-driven merges
	kindBPE                  // "gpt2": byte-level BPE with ranked merges
)

// vocab is the immutable load-time data shared by all encode and decode
// calls: the token table, special ids and the flags that llama.cpp's
// vocabulary loader derives from the metadata.
type vocab struct {
	kind   modelKind
	tokens []string
	scores []float32 // nil when the file has none (all scores 0)
	attrs  []uint16
	ids    map[string]int32

	bos, eos, eot, eom, unk, sep, pad, mask int32
	fimPre, fimSuf, fimMid                  int32
	fimPad, fimRep, fimSep                  int32

	addBOS, addEOS  bool
	addSpacePrefix  bool // SPM: prefix a space; decode: drop the first token's leading space
	cleanSpaces     bool // decode: llama.cpp's clean_up_tokenization_spaces passes
	ignoreMerges    bool // BPE: a pre-token that is a whole token is not merged
	specialByLength []int32
	eog             map[int32]bool
	pieces          []string // decoded text of each token, special tokens included
}

// score returns the SentencePiece score of id (0 when the file has none).
func (v *vocab) score(id int32) float32 {
	if v.scores == nil {
		return 0
	}
	return v.scores[id]
}

// special-token ids that llama.cpp reads from the metadata, with the field
// each one sets. The deprecated prefix/suffix/middle keys come last and
// override the fim_* keys, as in llama.cpp.
func (v *vocab) specialKeys() []struct {
	key string
	id  *int32
} {
	return []struct {
		key string
		id  *int32
	}{
		{"tokenizer.ggml.bos_token_id", &v.bos},
		{"tokenizer.ggml.eos_token_id", &v.eos},
		{"tokenizer.ggml.eot_token_id", &v.eot},
		{"tokenizer.ggml.eom_token_id", &v.eom},
		{"tokenizer.ggml.unknown_token_id", &v.unk},
		{"tokenizer.ggml.seperator_token_id", &v.sep},
		{"tokenizer.ggml.padding_token_id", &v.pad},
		{"tokenizer.ggml.mask_token_id", &v.mask},
		{"tokenizer.ggml.fim_pre_token_id", &v.fimPre},
		{"tokenizer.ggml.fim_suf_token_id", &v.fimSuf},
		{"tokenizer.ggml.fim_mid_token_id", &v.fimMid},
		{"tokenizer.ggml.fim_pad_token_id", &v.fimPad},
		{"tokenizer.ggml.fim_rep_token_id", &v.fimRep},
		{"tokenizer.ggml.fim_sep_token_id", &v.fimSep},
		{"tokenizer.ggml.prefix_token_id", &v.fimPre},
		{"tokenizer.ggml.suffix_token_id", &v.fimSuf},
		{"tokenizer.ggml.middle_token_id", &v.fimMid},
	}
}

// Token texts that llama.cpp's loader recognises when the metadata does not
// name the token. Each found token is forced to the control type.
var (
	eotTexts    = []string{"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<EOT>", "<｜end▁of▁sentence｜>"}
	eomTexts    = []string{"<|eom_id|>"}
	fimPreTexts = []string{"<|fim_prefix|>", "<fim-prefix>", "<｜fim▁begin｜>", "<PRE>"}
	fimSufTexts = []string{"<|fim_suffix|>", "<fim-suffix>", "<｜fim▁hole｜>", "<SUF>"}
	fimMidTexts = []string{"<|fim_middle|>", "<fim-middle>", "<｜fim▁end｜>", "<MID>"}
	fimPadTexts = []string{"<|fim_pad|>", "<fim-pad>", "<PAD>"}
	fimRepTexts = []string{"<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>"}
	fimSepTexts = []string{"<|file_sep|>"}
	// eogTexts are end-of-generation tokens by text, whatever the metadata says.
	eogTexts = []string{"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|eom_id|>", "<EOT>"}
)

// loadVocab reads the token table and the tokenizer flags from md.
// kind and the pre-tokenizer (BPE only) have been chosen by the caller.
func loadVocab(md *gguf.Metadata, kind modelKind, pre *preTokenizer) (*vocab, error) {
	tokens, err := md.Strings(keyTokens)
	if err != nil {
		return nil, &MetadataError{Key: keyTokens, Err: err}
	}
	n := len(tokens)
	if n == 0 {
		return nil, &MetadataError{Key: keyTokens, Msg: "empty vocabulary"}
	}
	if n > 1<<31-1 {
		return nil, &MetadataError{Key: keyTokens, Msg: fmt.Sprintf("%d tokens do not fit token ids", n)}
	}
	v := &vocab{
		kind:   kind,
		tokens: make([]string, n),
		attrs:  make([]uint16, n),
		ids:    make(map[string]int32, n),
		eot:    -1, eom: -1, sep: -1, pad: -1, mask: -1,
		fimPre: -1, fimSuf: -1, fimMid: -1, fimPad: -1, fimRep: -1, fimSep: -1,
	}
	if md.Has(keyScores) {
		if v.scores, err = md.Float32s(keyScores); err != nil {
			return nil, &MetadataError{Key: keyScores, Err: err}
		}
		if len(v.scores) != n {
			return nil, &MetadataError{Key: keyScores, Msg: fmt.Sprintf("%d scores for %d tokens", len(v.scores), n)}
		}
	}
	var types []int32
	if md.Has(keyTokenType) {
		if types, err = md.Int32s(keyTokenType); err != nil {
			return nil, &MetadataError{Key: keyTokenType, Err: err}
		}
		if len(types) != n {
			return nil, &MetadataError{Key: keyTokenType, Msg: fmt.Sprintf("%d token types for %d tokens", len(types), n)}
		}
	}
	for i, s := range tokens {
		if s == "" {
			s = "[EMPTY_" + strconv.Itoa(i) + "]" // as llama.cpp: an empty entry can never match
		}
		v.tokens[i] = s
		v.ids[s] = int32(i) // a duplicate text maps to its last id
		v.attrs[i] = attrNormal
		if types != nil {
			v.attrs[i] = attrOfType(TokenType(types[i]))
		}
	}

	// Defaults per model, then the metadata.
	switch kind {
	case kindSPM:
		v.bos, v.eos, v.unk = 1, 2, 0
		v.addSpacePrefix, v.addBOS = true, true
	case kindBPE:
		v.bos, v.eos, v.unk = 11, 11, -1 // llama.cpp's legacy BPE defaults
		v.cleanSpaces = pre.cleanSpaces
		v.ignoreMerges = pre.ignoreMerges
		v.addBOS = pre.addBOS
		if pre.noBOS {
			v.bos = -1
		}
	}
	if err := readBool(md, keyAddSpacePrefix, &v.addSpacePrefix); err != nil {
		return nil, err
	}
	for _, k := range v.specialKeys() {
		if err := readTokenID(md, k.key, n, k.id); err != nil {
			return nil, err
		}
	}
	for _, id := range []*int32{&v.bos, &v.eos, &v.unk} {
		if *id >= int32(n) {
			*id = -1 // a default that this vocabulary is too small for
		}
	}
	if err := readBool(md, keyAddBOS, &v.addBOS); err != nil {
		return nil, err
	}
	if err := readBool(md, keyAddEOS, &v.addEOS); err != nil {
		return nil, err
	}

	v.detectSpecials()
	v.buildSpecialCache()
	name, _ := md.String(keyGeneralName)
	preName, _ := md.String(keyPre)
	v.applyModelAttrs(strings.ToLower(name), preName)
	v.pieces = make([]string, n)
	for i := range v.pieces {
		v.pieces[i] = v.tokenToPiece(int32(i))
	}
	return v, nil
}

// readBool sets *dst from a bool key when present.
func readBool(md *gguf.Metadata, key string, dst *bool) error {
	b, err := md.Bool(key)
	if errors.Is(err, gguf.ErrKeyNotFound) {
		return nil
	}
	if err != nil {
		return &MetadataError{Key: key, Err: err}
	}
	*dst = b
	return nil
}

// readTokenID sets *dst from an integer key when present and a valid id.
// Like llama.cpp, an out-of-range id (often 2^32-1 for "none") keeps the
// default.
func readTokenID(md *gguf.Metadata, key string, n int, dst *int32) error {
	v, ok := md.Lookup(key)
	if !ok {
		return nil
	}
	i, isInt := v.Int()
	if !isInt {
		if _, isUint := v.Uint(); !isUint {
			return &MetadataError{Key: key, Msg: fmt.Sprintf("token id is %s, want an integer", v.Type())}
		}
		return nil // a uint64 above MaxInt64: out of range
	}
	if i >= 0 && i < int64(n) {
		*dst = int32(i)
	}
	return nil
}

// detectSpecials finds end-of-turn, end-of-message and fill-in-the-middle
// tokens by their text when the metadata does not name them, and builds
// the end-of-generation set, as llama.cpp's loader does. Tokens found this
// way become control tokens. When several texts match, the lowest id wins
// (llama.cpp takes whichever its hash map yields first).
func (v *vocab) detectSpecials() {
	find := func(dst *int32, texts []string) {
		if *dst != -1 {
			return
		}
		for _, t := range texts {
			if id, ok := v.ids[t]; ok && (*dst == -1 || id < *dst) {
				*dst = id
			}
		}
		if *dst != -1 {
			v.forceControl(*dst)
		}
	}
	find(&v.eot, eotTexts)
	find(&v.eom, eomTexts)
	find(&v.fimPre, fimPreTexts)
	find(&v.fimSuf, fimSufTexts)
	find(&v.fimMid, fimMidTexts)
	find(&v.fimPad, fimPadTexts)
	find(&v.fimRep, fimRepTexts)
	find(&v.fimSep, fimSepTexts)

	v.eog = map[int32]bool{}
	for _, id := range []int32{v.fimPad, v.fimRep, v.fimSep} {
		if id != -1 {
			v.eog[id] = true
		}
	}
	for _, t := range eogTexts {
		if id, ok := v.ids[t]; ok {
			v.eog[id] = true
			v.forceControl(id)
		}
	}
	for _, id := range []int32{v.eos, v.eot, v.eom} {
		if id != -1 {
			v.eog[id] = true
		}
	}
}

// forceControl gives id the control type, keeping its strip bits.
func (v *vocab) forceControl(id int32) {
	const typeBits = attrUnknown | attrUnused | attrNormal | attrControl | attrUserDefined | attrByte
	if v.attrs[id]&attrControl == 0 {
		v.attrs[id] = v.attrs[id]&^typeBits | attrControl
	}
}

// buildSpecialCache lists the tokens that are matched in raw text before
// tokenization (control, user-defined and unknown tokens), longest text
// first; equal lengths keep id order.
func (v *vocab) buildSpecialCache() {
	for id, a := range v.attrs {
		if a&(attrControl|attrUserDefined|attrUnknown) != 0 {
			v.specialByLength = append(v.specialByLength, int32(id))
		}
	}
	sort.SliceStable(v.specialByLength, func(i, j int) bool {
		return len(v.tokens[v.specialByLength[i]]) > len(v.tokens[v.specialByLength[j]])
	})
}

// applyModelAttrs sets the strip attributes that llama.cpp assigns by model
// name (Phi-3: white space after special tokens is dropped) or by
// pre-tokenizer (Jina v2: white space before <mask>).
func (v *vocab) applyModelAttrs(lowerName, pre string) {
	set := func(text string, attr uint16, on bool) {
		id, ok := v.ids[text]
		if !ok {
			return
		}
		if on {
			v.attrs[id] |= attr
		} else {
			v.attrs[id] &^= attr
		}
	}
	switch {
	case strings.Contains(pre, "jina-v2-de") || strings.Contains(pre, "jina-v2-es") || strings.Contains(pre, "jina-v2-code"):
		set("<mask>", attrLStrip, true)
	case strings.Contains(lowerName, "phi-3") || strings.Contains(lowerName, "phi3"):
		for _, id := range v.specialByLength {
			v.attrs[id] |= attrRStrip
		}
		set("</s>", attrRStrip, true)
		for _, t := range []string{"<unk>", "<s>", "<|endoftext|>"} {
			set(t, attrRStrip, false)
		}
	}
}
