package gguf_test

import (
	"encoding/hex"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/m40llm/m40llm/gguf"
	"github.com/m40llm/m40llm/internal/fixture"
)

// qtQuantInput is the 1024-element input of TestQuantizeMatchesGGML, made
// by the same steps in the C program that produced the expected bytes:
// Irwin-Hall sums of the four bytes of xorshift32 outputs (seed 0x9e3779b9),
// v/128 in [-3.98, 3.98], all exact in float32; the four 256-element
// super-blocks are scaled by 1, 2^-14 (f16 scales become subnormal), 2^8
// and 1. In the last one, elements 768-799 are zero (a zero block and a
// zero Q4_K sub-block), 800 and 801 are 3 and -3 (a magnitude tie, the
// first wins in Q4_0) and 832-863 are made non-negative (a Q4_K sub-block
// whose minimum is clamped to 0).
func qtQuantInput() []float32 {
	x := make([]float32, 1024)
	rs := qtXorshift(0x9e3779b9)
	scale := [4]float32{1, 1.0 / 16384, 256, 1}
	for i := range x {
		r := rs.next()
		v := int(r&255) + int(r>>8&255) + int(r>>16&255) + int(r>>24) - 510
		x[i] = float32(v) / 128 * scale[i/256]
	}
	for i := 768; i < 800; i++ {
		x[i] = 0
	}
	x[800], x[801] = 3, -3
	for i := 832; i < 864; i++ {
		x[i] = float32(math.Abs(float64(x[i])))
	}
	return x
}

// TestQuantizeMatchesGGML compares Quantize with the output of ggml's
// quantize_row_q8_0_ref, quantize_row_q4_0_ref and quantize_row_q4_K_ref
// (ggml-quants.c, compiled with gcc 12 -O2; the same bytes with
// -march=native -ffp-contract=fast) on qtQuantInput.
//
// The rows from Q4_1 on come from llama.cpp c392e509 (2025-02): a C program
// built with gcc 12.2 -O2 against that tree's ggml/src/ggml-quants.c, with
// ggml_table_f32_f16 filled from GGML_COMPUTE_FP16_TO_FP32 and aborting
// stubs for the few ggml.c functions it links, fills qtQuantInput's 1024
// floats by the same steps, calls quantize_row_{q4_1,q5_0,q5_1,q2_K,q3_K,
// q5_K,q6_K}_ref(x, y, 1024) and, for IQ4_NL, quantize_iq4_nl(x, y, 4, 256,
// NULL) (what ggml_quantize_chunk runs without an importance matrix; see
// quantIQ4NL), and prints the bytes as hex. Built with -march=native
// -ffp-contract=fast it prints the same bytes for this input.
func TestQuantizeMatchesGGML(t *testing.T) {
	x := qtQuantInput()
	require.Equal(t, "849505895fe24381", hexU64(qtFNV(x)), "input differs from the C generator's")
	tests := []struct {
		typ  gguf.Type
		want string
	}{
		{gguf.TypeQ8_0, "" +
			"a1269fe400f7e52bf57f2d0812212bb4caf0ff0ffc1f1e3135282cf010022123283c1e25171424d6fbd5e222feea8138" +
			"27360809f7310f28de90d9da1b25b72c0c02e035b524a6544b2bfdeb1c201eb6030932150cdee127ec5e244ae6cafaa9" +
			"31cddb8186bd7725bafb3b17101314e5d6d3de5368c37f03e2c62af739c34b2deefe30f1f5d41d294f23de0e4d24cbf6" +
			"d79b2c9617ad7e30a9a507b2355cf6ef093101cbecd67fa6100851261c81f2f918d20f4834500d0b2dd1ecf93413c5fd" +
			"bbd3fc24fee434253607ff11ee267fde1131106537b2e3c818f23eddd32432f6e6b22119bb0a191ed8bb593d0f0d0c24" +
			"2961ed3bd1ea50c7bd8e064ac87ff4af11f0a4f7ccfbe0fb3baea475083ab62d1500dbe83616ced53e60c91b6f30c86e" +
			"19d70d7fcf39ad21060ee0c040b2c1fd39d21b00170c0429c413a0e908180bfd24f6fa3c7fc6cccfbf4e0f17040d15f2" +
			"adfb2701160007c825c00555f9f3fc3baabdd8811b1df52097ff04450df6ef1f06fb4436cf851200f94c7b98cb61dd2f" +
			"2d331e92ae3d8d81adf9f1342fef33ff2812ead1f12fde3d1b000b050328e1eb44ff42812103e7e30d5cd42517d6fc4b" +
			"404cc10728ffbff3ea201900f915113ae944e028283a064b11397fd55ddfe600c7c6f532cfd32594b92c2e49150008e1" +
			"3ad13217ebc3eff1e902bf81c3dca93162226f1efb1bec32bebed5350f3511003befbe3f36af49215ce82e76b0e381fc" +
			"5c901416a6a62ae44b7c40df18ae47352446323fefdacb30f9e9ae1081bc2dd42a01cf3be234d0ecfcec12aa4118edad" +
			"3adb4f45e32c3e0f3f3ffd1a33dc5d9d81d3b5bf1a0851c9e422d4a93c43b4571c2c24023645c12fed0bfe0efbd00f14" +
			"81e623c415c4ffcd653018cfec243f5242eaf8a1b54f6544088bd68ee82bda6ae72fd8110a26f0a381d419d49b26b3e4" +
			"30d20a3324c60533dc450824d07b02c2d021c6add79b5143db2968ff816506d97539f8e722171e0db61432450afbd91b" +
			"f6c91302a2c7b6ffcbff9c6f8df5ecee317fc3c633b8fdcc59db27cc85449b7a35f405a3b5f2b32245caf3fe1aeef0a7" +
			"24efb625bb53ff29a37fdbf4aaf42046f9007fc020b7051d0e32592dccde18dc32ecf3472965f7e7300f0a2ab9c97ebc" +
			"000000000000000000000000000000000000000000000000000000000000000000000c267f81e9c0253915080ae4f8d2" +
			"e7ef3a18fbd7e1e57628cbf020e8fd29d6c5d03067251a062f1a4b2d512714365f03580437297f1c37210f1e35032839" +
			"276932522b2d6f25bc0ce4a21998d9dc5c214321672e0deff33750d2da027fe10ab0a0fe262a4f0abd243312daa21fae" +
			"eceef7190b9c491e647f310520ea662c173ae23cbb564de5bffdca2445ec0a191d12d76306e44bcdae939f08bc53e57f" +
			"47f9c751c90f1c1eb1f4ebdce6242452351447d84117c132fcea00f36433430dfe7fcef3ed0b8fbad1001d3335d66126" +
			"cd06c8cb167fdd00c3d9e41b402027f2ea0e2406183c6b09562a62f2cdc50915"},
		{gguf.TypeQ4_0, "" +
			"94b68e7a88696a55596055977786656d6b49143579b99ab56815666aa8a730bc9a8b69b9ac3462ad7deba8d76a5a8a33" +
			"b8596b0909466cb5acc8549747c7375a9b8b5a9391bc605840b38ad753269b997b5e85bf97bd00e57d8e4436ba904788" +
			"495589ad8b6db9a9bb858798e0b6509aa7d56762c57d6a6cb6c9244a7b7604b47592e994bb89a38c4cdfe8138c40d95d" +
			"4e817a0ab547db6b8472abc641d5cb8146bbab8107c7b8b5cc377e7987767798d68968845e0178a51a8488cd987778ac" +
			"8384c6b05a0a2101388d7fb1b57eb68bab9b7a5173bc61c0a80159a8985b86d7ccd84c80ba88467679ae878128a7a784" +
			"c9c49a55b5b468f3d754503b4f0139b6eca5fba987a477b7474854b094b60701ec17949c2b23bd6adef7cb6fa336d0b8" +
			"18565bcc67b6557b88779339c0947b35cb684455a68bdc596cac582acbc63ed2a0b5a3842c55845be7b9985978a5c9d9" +
			"c0768a2439d45c540851a55127ab366fb65b96b9a94a87b2d055f88a05ef8864f5ca7463a592ad9c369b28d5f7989a96" +
			"590bc7c85edc8db82ba86eb17cd49ee06599d86ecd398d56e40ba998d69914d65898904c562d98a657757255cbba06ca" +
			"00808888888888888888888888888888888800b680bfa9ac1654b79767aa895bbac9b4565cb506685566736553865745" +
			"62185238555564b59c573abea68f0aaa72d6e48662553779b4b455876a9e265d7949a946c73e33a6c280c0b4c439a706" +
			"4687cb32b87a636bdd9f9ea7dcb446738507b39b9477fcc5b889685952b554b69b786c8b67401a783c5a2a96b4c67679"},
		{gguf.TypeQ4_K, "" +
			"971e672abfe5e9ac71f2ae9fd2f5bb4ac0c4e675a47985dea99707f8e9f1b3b5a6f7c6e888197979d9e547e6b8b889fa" +
			"025fae7c79777b3b2b2439c9dc1afa66371b975fab1eb79548539c4556208094b4088c99b366a4e0daf0a8a1cf6a8191" +
			"d7b25a9d466697ca9773d5c4dfa198a79fc367a9475dba30340277b53ae362288965146048675166a72813d17caa2797" +
			"07003500f0fdefaee0eff3a9fc3f348b737468862272094b62777c68825c57a2e62d323920b775766371795011558962" +
			"69b4eb1449ce589798ac821426a00a0a276a61a8986da978978a69486d9c55a06978789b56a74c888c906aa87696d94e" +
			"b54a5965383d6c9d34488a08249797aaa8663ba5aa39b694c667a6e834500475c21a8d892e299759b6eab454853ab8ab" +
			"1e3e184af5f3b1f0fff9b4aeef277d557dced8a7d5dd99b8c36bf0240d664d4ab69ee75d76b86938dbd34efbb8c3be97" +
			"841c571968a958e569aa50978ba47a2408559f5c2aa5376bad5e8db7a84283be887a559f7844857a144335724d7c16ea" +
			"0e78606ea8f53f4ba7367a49da59a349506ffa16870162867299cb9326377936964159b692d9524c977a619f0416f106" +
			"591e0e2a80bfdef580bf80b26ddee222f0006040a0b09080806070506070b09070506060f0a04070a06070a0504050b0" +
			"3381551399055954d296cb90eaa086656eb3c6445273f6508526147ca6a9c585ca688490989155e58668c7402b081d8f" +
			"3ad769f5cd7948da448a929c2c756256196c1a187bf52b58032a3776a7868d4a3b68876f74a6e668c093d447190a6a74"},
		{gguf.TypeQ4_1, "" +
			"313608c16085669695a9a69f9a578879999193a5cd3314c1aceccde78a17787ddad940efbebf8bfb5534acc073be7efc" +
			"b8e77b5b8b34c9596c0a09467a34f0bd30158a57a717b7934252934c4d218f86153308be7528acd9636674a07a306841" +
			"ff1a8171753544c2dbb058994b669ace9d7fdacadca698a9eb3538c09f534709878d1a6084823715caa37278113438bf" +
			"8a6d167b44765c74b32018ec84bf26a22601d08673f42aa802836a7d4218ae09126ea83391011089f837373922c87085" +
			"777887661966967a3701788989b52c9499efa98889bd9394e6d06b0b2f018488377c7fb1a47db68aaa9b695173ab61b0" +
			"8501a08a69b9a96b87e7dde94d90bb9947877abf82013089d658587b353b65a9494b970c28abafc44f013c8939b6eca5" +
			"fba987a477b7474854b094b615011c88db17949b2b23ac6acdf6ba6f9336c0b7e95418e26eff89e7668ea988b43bf0c5" +
			"8d36ed7ae05444e1a79ced5a7dbd683adcd63ff2b0c6b494f3542ce1845bf7c9a85978b5c9ead0778b243ae442545ce0" +
			"0951a55127bb366fb75b96b9b94b97c21756d0e1e88a05ef8854f5ba7463a5929c8c359a3c55a8e008676569a7f43847" +
			"a1347347d457a14e4b5420df601f9a66279022c672990bf3466618651c5500df95465fb198d0564897796c990213f703" +
			"0000000000000000000000000000000000000000663600c27f506664eaab4978986677a556465ba99531002cf3306543" +
			"1935690452664bc06aa056553a3568c062a8c5414870f4547d291b799d9ac8767a3460bfaa789450d9a185a556b827c0" +
			"cb592d6fb53414c03bc658f8b97834cd37859c9422606157e43450c0b98c7af84c656b89033a477697a6ad4a023520be" +
			"3165805177afd265c082d3471a076874"},
		{gguf.TypeQ5_0, "" +
			"94b25fe0050a0ce400c1c3ab91b0aa2fee0ccbcab782143187f90ebbf362255bcf2bbcb4305d70671507c171ac30de7d" +
			"3a04c55be9c5509dd494f45760a1b603118c6cb183a72b3b4971b91d9e8e7da32506a4261368c0b040aff1ca322ff4ae" +
			"964b1721f5ad0a7d2d5a00baebfb4432d11f8bfd74209e0f73aaf25907ca7251761a0e2fe0b2826b4e0ca0143eaaced3" +
			"99fad4c75d925884e6eb04b0b4d3fe46eb24c2197613461798aecf17f79091aaa780339114bbe503699da6c5f8e4478d" +
			"82aa87029d65d680d0681eb80d7e7f6b886eecd3ffeddf20ab11b108af0035c27a36f1493508019b2ffeef4715f89b70" +
			"a3049000a627d8a36ffaef7369ec6c065626d4a2e668c280d400cfcdf68ea15130b50c9d89a0881054008decd24cc480" +
			"51807e1b414d3e09737714ab6b69bfe79eb9a075a8003508bee2516cc74ae643fd38de6e8d80b870287b8400d90d4dd7" +
			"c72e2838575659c49cfd86cf366c907f185223d24a4da678ce7ba9d60fed26528037e65a75b04451fe0527fb3c16a892" +
			"d848a053868b6cb4306a57082c513a539d8708a6de6130a2ef5a82a380ddf44873a85c50a13a24dd01a13ba23d556bcd" +
			"6da61b6251951e64d0519bb0dbbcd1050adf10b8fa74f9d64b334a287b3528d1b67fcfaeef11252da1078e70ac970960" +
			"5750bd727cd0e9b95bf52db1b9229fbc99620abcc7075210bd1214d22bb0c6b0a1302078bc391f3caeeaf5ba96740d95" +
			"0080ffffffff0000000000000000000000000000000000b20e3ecf76105f43381bb97d2fcf3401b6537269ad5cb10008" +
			"80000ddf9acde7ca960bbe99b430a56fb9ab64b1ed80b90e299f646c5d0d0544f4acc80cb3ba6ef2b4b0ec0908e5aafe" +
			"c53c3caad292418d9f5d673c8300c0b0427a65f197633f0d7c1e75637fe4c7c6aa1e3c5fdcb0203d748f8be6090d6725" +
			"28fde89a6003c0a2935a54b2cd87013836efb7f7dd8034f058b5442d687cfbd2"},
		{gguf.TypeQ5_1, "" +
			"fe3108c1a01dfaf5d00add2c2a435c3f44bf00e22323366b8c2f14c1d7fb1ffb4ae98cce053ef0fba5c290df8c6f07e7" +
			"3230acc0de7d3a05e57efcf871cfe6a6166792b3d905138d5530f0bd0458d4c4602a24af4d1e7e2784b426989b410f1b" +
			"db2e08be0e358c50fa4058a3d7cdf951e470b193ff2402f2483144c2dddfcbfdb760a12297cc258e3bffb585ba4c3052" +
			"ba3138c0699031333fa78e031e0b14d007036f1a9556e5e1df2f38bf4b2c01b914db3cd689ecb9e7664030e8076f5d54" +
			"8e00d086cc6e2a44e7f954500516d5ea84306d1334cd5056c20010892992a144f15f6e734580f01aeff10fbd22dc3de6" +
			"97007889f5c3fb3f147a382933df5211027b3629ddb0b71793008488a627d8a36ff9ef6369ec6b065526d4a2e667c270" +
			"bc00a08acfcdf6aec47352c81edfbcd29b3087229e0ef47fbb003089ae7b81e4ada1b0e67b77da5484863f0850464f89" +
			"a2003c893508fee2527cd85af7430e49ee7f8e81b870297c86001c88d90d4dd7b72e2827565659c49bfd85ce366c906f" +
			"c05018e2e7d2ee5dddef02dedc1c43117777f0891c7debf5b85044e1fe0527fb6e38dba4eb7bc166a9bd7fe4608b7729" +
			"ca502ce17a539d9719a8ff8351b3f16ba3c4a0ee064974c91f505ce0a13a24dd02b14bb23e677cdf7eb72c8362962f85" +
			"e551d0e19bb0dbbcd1040acf00b8ea74f9d54b334a187b251151a8e04980305100decac25df8717f5367e58fa8af428d" +
			"275020df0646a40ab02e35bc4e31439ce33217f69ccd21cbf25000df940e39493a8b9f6120b0ac703ee3d9220336ff16" +
			"000000000000000000000000000000000000000000000000323200c2f1c13089ffa0cdc8e44692e131dcff5aac8da752" +
			"672d002c50140128f661db76327bc40994dd97a0c540adaa0e3168c0127f4670c5509a8191e0f9a9fa3217e23c4490fc" +
			"553060bf13f2f51a45e028b1c2421b6bac614f9088a25bdf8e3014c0bd049a0e579cb0f282d1799b7f0b282844d0c2af" +
			"bc3050c0dfc28b707309e5f188d9c70206558efc2f5d5c95d93020be2050640762cb01b1ee4fc4ca8014a58f250fc0e8"},
		{gguf.TypeIQ4_NL, "" +
			"c2a68e7a88595a45495044977685545d5c3944257ac99bb55714555ba8b630bc9b8c59c9b52452be6debb8d66a4b7a22" +
			"c8495c0a093560a5adc8439636d6264a9b8b4b9291bd50580ba37be742159c997b4f84cfa6be00e46e7e3826caa03787" +
			"3a4479bd8c5ec9b9cc84869707a7409ba6d45661d47d6a5cb6d9233b7b75d9a36591ea93cc8ab28c3defe7027c30d94e" +
			"15807b0ac446ec5b7371bcd631d4dc8146cb1b8006c7c8c5dc267e6a87766798e5895883160078b41b8388de977768ac" +
			"8273d5c04a0a1300277d7fc1b46ec58bbb9c6a4172bc51c01b0049b8a85b85d6ddd83d80bb88367569be188019b6a683" +
			"cac39b45c5c357f2d643402b150029c5ecb4fcaa76a366c7363843c093c51100ec16a3ac2c22bd6bdef6db5fa226d0c8" +
			"27464ccd56c5446c87669229d0a36b24cb583445a59bed496dbd482accd52ee1a0b4b283e944834cf6c9a84967b4d9ea" +
			"d0667b132ae321440940a44016bc255fc64c94c9b93b86c12746e98b04ef8853f4cb7462b5a1ad9d35ab69c5f7989b96" +
			"490cc6c84edc8dc82cb85ec196c49ee05499d75edd298d55e30cb998e69921c649a8903d551d97a547747254dccb06db" +
			"00008888888888888888888888888888888851267f505663fbbc4a79a96687b456464cca58a506674456725442855634" +
			"51184228444565a59d472aceb68f0bbb72e5e3855144277995a444765bae154e6a39a936d72f22a5d180b6a4d32aa706" +
			"3586cb21c77a525cee9faeb7e1a435728406c39ba376fdd4c88a584941b458a6ac775c7c66301b782d4b1a96c3c57569"},
		{gguf.TypeQ2_K, "" +
			"cf14cdb878ba59687868fd889d9b88790879b9655556652b260512aaea28e959582dac7eaa33d7966f5ca55c5a0a8a9f" +
			"b9d25aea5975e94c5e0caad86fd648286d58124a6165496aa9241dc97fa829a92130af324668c77ad9b89875ff8758ca" +
			"c877a7776cdcea1d64fc62aba8bd9f1a1c8b292c2da380e2e07ae5a5e4a46664b0f55ac4e5a575daf169e299eaa8e6e9" +
			"55491d92cd26b6a93527976b94e68a419429a9aea700de00fcaaca9aca9a9aa8cdefacce7a7a6c8c9b3f6e296daf6ada" +
			"6da64ca1b3956716295bfd6725d956a1fe7cb3ded9488bf94a76e51b5605495641a4a1841717611e934664978aed4766" +
			"996546b61e16c916b24f78520000ff690507baac9a68986947bb6b795c805414a8187858d8a4f484f484a85874909050" +
			"4c58d0445814146890a090582e7629186ac8255d09261e449252736b6269967d9b96d26ac196d4672225649144306632"},
		{gguf.TypeQ3_K, "" +
			"3b5fa725bf9035feeef9ac76a64fd7bb3bfec3ee949cf0e03e9bf47baa3aa0329735b4ec01ffdc54535c434b679a0230" +
			"b0dbb4365ee13cad4515a76872828da8c55072a3765ca1ab9bef3383a41b1fb3ec47d631b035700ab0faed390c93f3b4" +
			"f102c7040295d7f10c1d3337fb26ff1b5e92e54fb49c9f4ebad2030a16b7758e033e9f846fad5b1f64d757bf302b05a1" +
			"d267caf6c64d42675062b68053590018da8a8beb800cb152ce82eea0aec180fcacb9a79bb66cfec871c8afcb20377eee" +
			"dff2c8f8c1789b28a660e7e9b9ae0649e07f7666b64103f330c71b80f9a732c676ffd76af63d3278ede835c176f7aa71" +
			"500ef5b05ba2f93fdef64ffa2e26fb03ca4ac0e7c99dcc76116fd96806e34fea7e6798f769d8279d47b837923003268c" +
			"c0ba2ec33ebb6de38942fd539f703497e8732b5a883b31c995843e89d20b85b86666fbf9f0ccf0f03dc6a08eb2b22870" +
			"90b2fa8afa5e4a4e08a0aa52629a4c6862ce784a5ac8a2b2b278b00ce4785c68dce0f0648044c44028ec00b46474403c" +
			"28443ce4f01ce4d87838be1fa1b7d727593db06f4cdb86d3c1206ac4c701d8821b0679ae1f4dbda127d490e030a5ec76" +
			"2b7702023c009e26"},
		{gguf.TypeQ5_K, "" +
			"131a582abfe8ecad73f3af9df4f7ac59e2963ef42641e6273722b5af7f962e62e2271a374f053939a7422da2f3e333ab" +
			"909abdec4ae30cbf542f00f2c4e3767b4de08dc20224f5f3a4bb90de726203e605ae4ce8d1efe66646475283b915f4bd" +
			"6e271f9f471c7e2a81a6298b9d40f1187a00192377cd59e1b4f05153afc50322bf64a53b9dcc20953ff7bc99bf42316f" +
			"4fc7de739ecb948067030f9a85f6e55113da38e081efb1ed7f4036e109755e5e03003600f0fff2b0e1eff4abfd1e258c" +
			"d6387db3c46e95bdbc2f99f122293596a655d0cd5c57de7e8cdcb714847ce3f817f9e430550605aaf410fdd334ccd066" +
			"fe5f656540810d1ee8f306b123dc35e6f4abf83993cfc261627b46296d80270761f7e37363ed75015027d4a2ed6bcc81" +
			"d4130368be7fad424c60f7830f6ef59faca8b6ec727ddc5e8984380259414f8782ed898b7864ae49cfdf6ef168d0090c" +
			"c5283e355f5560d5aef888c83b689378083a3e4af2f2b3ecfff6b5adcf064c343957c336960f279b06cdc2881d184531" +
			"96134f95b4eb1155af461ddb3f12ab1eed8fb24fbcbd246197d7f04a0cce7c956d3ed0aded72c462a8b77fe962877e2f" +
			"2918bf23e173c1fbe374c03e2669f45901ba4fb8446a7fd67abc2a8e6094278c01e4aa2fd0881af439765bf38af82bd5" +
			"0dd0c0cc50fb7e775f6de483a4a14782a0bef51c0e01c30cd33297263c6df15b3b81926b23b3a4793dd3d12f083cf21c" +
			"7b1a222a80bf9cf280bf80ae6aadcf00725840607ea246620a582c089c18da52546898603292987082b0a036584c4802" +
			"e000c0704060200000c0e0a0c0d06020f0a0b0c0d04090d030c0f040a08090505601ab16120b9399a52d7721c5410dca" +
			"ce579d8894e7fda1fa3d19e93c438afb75b0f81122029bbbfca18f7038021cff559eb2fb7cd471967a06242a48dab59d" +
			"23b91511e7f946a106455efb5efc0b8567c00ebfe84dccc08015a88e2205c5e9"},
		{gguf.TypeQ6_K, "" +
			"18d7a0f2f796a3b1a56e1c3815734d4481a8b2809036942be9a8c83f7f0d1bf1261519a5cfb5b879bfba90be6a0e02f2" +
			"cd8ef44c869015d5781bcb6d532147ff188dcd47cd722a3975eaaa341194b576ee3493c943749ec4705de59a00a7bcbe" +
			"67805d2eb654c4e20dc4e3e3eb143b4eb849953ee01b9e110f639801e9034f48cbba7a66565566a8a585a12939eb2a5a" +
			"96e91ab925f01414988a219998c844084a2194559a861abfe9ef592b9825a7d74dabe1b49292b59d56d6ee3e4c4bd559" +
			"86c75c513e549ec4bcbe723e80a9b5bd12131946832a1d2bf0d8fed9d4247e546a6add749b0412f93fedc77e12f1fec1" +
			"545ae604b1ac5f5584aaa2b7738feadd7e4155ecbb1afea01d0bdf6d9c03b1f158402291c169b95bcf30ced4b7012a5a" +
			"33846043888f41961a95564e0200b734c835d1cb2cd3b5f1f77747b3af90fca454f9c788cab042427d6c04552975be2b" +
			"0b526adae91962fa51949aa988151a84252e11684ae9ab65e59596a6655b6eaa55caaa566696a9259a96d65496e61545" +
			"125b3fd5455ac6d46498671579b263da5a5dac9f5e80666354377bb48f6364ab4eb401000ccfbc37f33cfe4a4c54019f" +
			"9b155a100e0615139ef86f59d770c87929d17582290b5014a0c06fd79dd7585730a5cd7019536d5c769cd091c55835cf" +
			"9a201dd1ae172c31ff803c474f75ebea3b1f99554a60704921761dce0e6a791698335d352d011b088320fa9fcb40a550" +
			"df80ad903c5335e464612f6e44c2d15d2ae9061d962a5d295dae55d968a64c90a2956216287b8d5314a925518e4c83ae" +
			"a97cbb89b5891ae459ff76657e5f0e6ba8a85ea16fba982b7611bb8a655d7a4ae2aa34ea80ac95b49757aea575895c6c" +
			"5a5e7f7a4ab270e0107070105030a0e010f030f0e02010903080c09030f06020606040c05050b14f763087024b5ecda7" +
			"42abf6e442ba312bc8b7a0f50e84e74781056b50cde3436bfa9898d5b594420a1d790e480700f1de1607d13359dec92e" +
			"c506993834b1d4fae3d7a905940df2a876910880644261cb57e09ef21edc7e4c4948f413d5a9109c581c84144454d488" +
			"c898c8988454885818989054189854d8d884584c18549d458a9b492b869eba95ad67606140988d516942602929503a74" +
			"27a49cda5b6a0000838fad915a93a1b153a0b39e80915812"},
	}
	for _, tt := range tests {
		t.Run(tt.typ.String(), func(t *testing.T) {
			want, err := hex.DecodeString(tt.want)
			require.NoError(t, err)
			got := make([]byte, len(want))
			require.NoError(t, gguf.Quantize(got, x, tt.typ))
			ts := tt.typ.TypeSize()
			for b := 0; b < len(want)/ts; b++ {
				if !assert.Equal(t, hex.EncodeToString(want[b*ts:(b+1)*ts]), hex.EncodeToString(got[b*ts:(b+1)*ts]), "block %d", b) {
					return
				}
			}
		})
	}
}

// qtStressInput is the 2^18-element input of TestQuantizeMatchesGGMLHashes:
// 1024 groups of 256 from xorshift32 (seed 12345). Each group draws r, a
// scale 2^(r%41 - 20) and a kind (r>>8)%8; its elements start as Irwin-Hall
// sums v/128 of one draw q each, times the scale, and then by kind: 1 keeps
// one in three (q%3 == 0), 2 takes |x|, 3 replaces x by ((q>>3)%5 - 2) *
// scale (few distinct values, many ties), 4 zeroes odd 16-element
// sub-blocks, 5 cubes x (heavy tails), 6 takes -|x| - scale (all negative);
// 0 and 7 keep x. Scales up to 2^20 overflow the f16 scales of every type,
// which drives ggml's nearest_int outside its asserted range.
func qtStressInput() []float32 {
	x := make([]float32, 1<<18)
	rs := qtXorshift(12345)
	for g := range len(x) / 256 {
		r := rs.next()
		scale := float32(math.Ldexp(1, int(r%41)-20))
		kind := r >> 8 % 8
		for i := range 256 {
			q := rs.next()
			v := int(q&255) + int(q>>8&255) + int(q>>16&255) + int(q>>24) - 510
			f := float32(v) / 128 * scale
			switch kind {
			case 1:
				if q%3 != 0 {
					f = 0
				}
			case 2:
				f = float32(math.Abs(float64(f)))
			case 3:
				f = float32(int(q>>3%5)-2) * scale
			case 4:
				if i/16%2 == 1 {
					f = 0
				}
			case 5:
				f = float32(f*f) * f
			case 6:
				f = -float32(math.Abs(float64(f))) - scale
			}
			x[g*256+i] = f
		}
	}
	return x
}

// TestQuantizeMatchesGGMLHashes compares FNV-1a 64 hashes of Quantize's
// output on qtStressInput with those of ggml at llama.cpp c392e509: the C
// program of TestQuantizeMatchesGGML, built with gcc 12.2 -O2 -DNDEBUG (as
// release builds are: the huge groups fail nearest_int's assertion
// otherwise), fills the same input, calls quantize_row_*_ref(x, y, 2^18)
// (for IQ4_NL quantize_iq4_nl(x, y, 256, 1024, NULL)) and hashes the bytes.
// Unlike qtQuantInput, this input does not give the same bytes when ggml is
// built with FMA contraction.
func TestQuantizeMatchesGGMLHashes(t *testing.T) {
	x := qtStressInput()
	require.Equal(t, "6f8d57d921e93ead", hexU64(qtFNV(x)), "input differs from the C generator's")
	tests := []struct {
		typ  gguf.Type
		want string
	}{
		{gguf.TypeQ8_0, "829b1bfec985aeaa"},
		{gguf.TypeQ4_0, "ff21f71655ba6043"},
		{gguf.TypeQ4_1, "1066400389fe05ad"},
		{gguf.TypeQ5_0, "1e5d5b14e9a17df7"},
		{gguf.TypeQ5_1, "5d2ac4d3440239e9"},
		{gguf.TypeIQ4_NL, "a21c0ac67ff5b146"},
		{gguf.TypeQ2_K, "c7a26c0834bbb672"},
		{gguf.TypeQ3_K, "47615d11be66ddef"},
		{gguf.TypeQ4_K, "a62088e8df6109b2"},
		{gguf.TypeQ5_K, "124934056aad2f7d"},
		{gguf.TypeQ6_K, "40cec51f3db79dc2"},
	}
	for _, tt := range tests {
		t.Run(tt.typ.String(), func(t *testing.T) {
			n, _ := tt.typ.RowSize(int64(len(x)))
			q := make([]byte, n)
			require.NoError(t, gguf.Quantize(q, x, tt.typ))
			h := fnv.New64a()
			h.Write(q)
			assert.Equal(t, tt.want, hexU64(h.Sum64()))
		})
	}
}

func hexU64(v uint64) string {
	b := []byte{byte(v >> 56), byte(v >> 48), byte(v >> 40), byte(v >> 32), byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}
	return hex.EncodeToString(b)
}

// TestQuantizeQ8_0ModelBytes quantizes the F32 stories260K weights and
// compares the result with the Q8_0 file made from the same checkpoint by
// an independent converter: a byte-for-byte match of all 37 Q8_0 tensors,
// ffn_down's row-straddling flat layout included.
func TestQuantizeQ8_0ModelBytes(t *testing.T) {
	qpath := fixture.Shared(t, "models/tinyllamas-stories-260k-q8_0.gguf")
	qf, err := gguf.Open(qpath)
	require.NoError(t, err)
	defer qf.Close()
	ff, err := gguf.Open(fixture.BundledModel(t))
	require.NoError(t, err)
	defer ff.Close()

	n := 0
	for i := range qf.Tensors {
		qt := &qf.Tensors[i]
		if qt.Type != gguf.TypeQ8_0 {
			continue
		}
		n++
		t.Run(qt.Name, func(t *testing.T) {
			ft, ok := ff.Tensor(qt.Name)
			require.True(t, ok)
			x, err := ff.Float32s(ft)
			require.NoError(t, err)
			want, err := qf.TensorData(qt)
			require.NoError(t, err)
			got := make([]byte, len(want))
			require.NoError(t, gguf.Quantize(got, x, gguf.TypeQ8_0))
			for b := 0; b < len(want)/34; b++ {
				if !assert.Equal(t, hex.EncodeToString(want[b*34:b*34+34]), hex.EncodeToString(got[b*34:b*34+34]), "block %d", b) {
					return
				}
			}
		})
	}
	assert.Equal(t, 37, n)
}

// qtF32Block returns 32 floats: the given values followed by zeros.
func qtF32Block(v ...float32) []float32 {
	x := make([]float32, 32)
	copy(x, v)
	return x
}

func TestQuantizeHandBuilt(t *testing.T) {
	tests := []struct {
		name string
		typ  gguf.Type
		x    []float32
		want []byte
	}{
		{
			name: "Q8_0 amax 127: d=1, roundf ties away from zero",
			typ:  gguf.TypeQ8_0,
			x:    qtF32Block(127, -63.5, 0.5, -0.5, 2.5, -127, 1.49),
			// d = 127/127 = 1 (f16 0x3c00); q = roundf(x)
			want: qtBuf{}.f16(h1).raw(127, byte(0x100-64), 1, 0xff, 3, byte(0x100-127), 1).fill(25, 0),
		},
		{
			name: "Q8_0 amax 254: d=2, halves round away from zero",
			typ:  gguf.TypeQ8_0,
			x:    qtF32Block(3, -1, 254, 1, -3, 5),
			// x/2 = 1.5, -0.5, 127, 0.5, -1.5, 2.5
			want: qtBuf{}.f16(hNeg2&^0x8000).raw(2, 0xff, 127, 1, 0xfe, 3).fill(26, 0),
		},
		{
			name: "Q8_0 zero block: d=0, quants 0",
			typ:  gguf.TypeQ8_0,
			x:    qtF32Block(),
			want: qtBuf{}.f16(0).fill(32, 0),
		},
		{
			name: "Q4_0 first of equal magnitudes wins: max=4, d=-0.5",
			typ:  gguf.TypeQ4_0,
			// elements 0-8 and 16-17; the rest are 0 -> q = 8
			x: append(qtF32Block(4, -4, 0, 0.25, -0.25, 1.5, -3.9, 1.75, -1.75)[:16],
				qtF32Block(-3.5, 3.5)[:16]...),
			// q = min(15, trunc(x*-2 + 8.5)):
			//   4 -> 0.5 -> 0      -4 -> 16.5 -> 16 -> 15   0 -> 8
			//   0.25 -> 8 -> 8     -0.25 -> 9 -> 9          1.5 -> 5.5 -> 5
			//   -3.9 -> 16.3 -> 15 1.75 -> 5 -> 5           -1.75 -> 12
			//   -3.5 -> 15.5 -> 15 3.5 -> 1.5 -> 1
			want: qtBuf{}.f16(hNeg05).raw(0xf0, 0x1f, 0x88, 0x88, 0x89, 0x85, 0x8f, 0x85, 0x8c).fill(7, 0x88),
		},
		{
			name: "Q4_0 zero block: d=-0 (0/-8), quants 8",
			typ:  gguf.TypeQ4_0,
			x:    qtF32Block(),
			want: qtBuf{}.f16(0x8000).fill(16, 0x88),
		},
		{
			name: "F16 rounds to nearest even",
			typ:  gguf.TypeF16,
			x:    []float32{1, 1 + 0x1p-11, 65520, -0x1p-25},
			want: qtBuf{}.f16(0x3c00).f16(0x3c00).f16(0x7c00).f16(0x8000),
		},
		{
			name: "F32 copies bits",
			typ:  gguf.TypeF32,
			x:    []float32{1, -0.1},
			want: qtBuf{}.f32(1).f32(-0.1),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Len(t, tt.want, len(tt.x)/tt.typ.BlockSize()*tt.typ.TypeSize())
			got := make([]byte, len(tt.want))
			require.NoError(t, gguf.Quantize(got, tt.x, tt.typ))
			assert.Equal(t, hex.EncodeToString(tt.want), hex.EncodeToString(got))
		})
	}
}

// qtRMSE returns sqrt(mean((a-b)²)) and sqrt(mean(a²)).
func qtRMSE(a, b []float32) (rmse, rms float64) {
	var se, s float64
	for i := range a {
		d := float64(a[i]) - float64(b[i])
		se += d * d
		s += float64(a[i]) * float64(a[i])
	}
	return math.Sqrt(se / float64(len(a))), math.Sqrt(s / float64(len(a)))
}

func qtRoundTrip(t *testing.T, x []float32, typ gguf.Type) []float32 {
	t.Helper()
	q := make([]byte, len(x)/typ.BlockSize()*typ.TypeSize())
	require.NoError(t, gguf.Quantize(q, x, typ))
	y := make([]float32, len(x))
	require.NoError(t, gguf.Dequantize(y, q, typ))
	return y
}

// TestQuantizeRoundTripError bounds the quantization error.
//
// On N(0,1) data the bound is relative RMSE = rmse/rms. Expected values:
// Q8_0's step is amax/127 with amax ≈ 2.0-2.5 for 32 normal samples, so a
// uniform rounding error gives about 0.018/sqrt(12) ≈ 0.005 (measured
// 0.0054); Q4_0's step is amax/8 ≈ 0.27, about 0.08, plus the clipping of
// the side opposite the maximum at 7 steps (measured 0.086); Q5_0 halves
// that step (measured 0.043); Q4_1's step is (max-min)/15 ≈ 0.28, about
// 0.08 (measured 0.078), Q5_1's half of it (measured 0.038); IQ4_NL's 16
// non-linear levels do a little better than Q4_0's (measured 0.076); Q4_K
// fits each 32-element sub-block with a scale and a min over 16 levels
// (measured 0.071), Q5_K over 32 levels (measured 0.036); Q6_K scales
// each 16 elements over 64 levels, a step of about amax/32 ≈ 0.055
// (measured 0.018); Q3_K has 8 levels per 16 elements, a step of about
// amax/4 ≈ 0.45 (measured 0.151); Q2_K fits 4 levels and a min per 16
// elements by least absolute error (measured 0.295); F16 keeps 11
// significant bits (measured 0.0002). The bounds leave a margin of about
// 10% over those figures.
//
// The ggml rows repeat tests/test-quantize-fns.cpp: data 0.1 + 2cos(i) over
// 4096 elements and its "total quantization error" sqrt(Σ(a-b)²)/n (not a
// true RMSE: it is the RMSE divided by sqrt(n) = 64) <= 0.002, or its
// MAX_QUANTIZATION_TOTAL_ERROR_2BITS (0.0075) for Q2_K and _3BITS (0.004)
// for Q3_K (measured 0.0047 and 0.0025; the others 0.0003-0.0012).
func TestQuantizeRoundTripError(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	normal := make([]float32, 1<<16)
	for i := range normal {
		normal[i] = float32(rng.NormFloat64())
	}
	tests := []struct {
		typ      gguf.Type
		maxRel   float64
		maxTotal float64 // 0: 0.002
	}{
		{gguf.TypeQ8_0, 0.007, 0},
		{gguf.TypeQ4_0, 0.1, 0},
		{gguf.TypeQ4_1, 0.085, 0},
		{gguf.TypeQ5_0, 0.047, 0},
		{gguf.TypeQ5_1, 0.042, 0},
		{gguf.TypeIQ4_NL, 0.083, 0},
		{gguf.TypeQ2_K, 0.31, 0.0075},
		{gguf.TypeQ3_K, 0.16, 0.004},
		{gguf.TypeQ4_K, 0.085, 0},
		{gguf.TypeQ5_K, 0.04, 0},
		{gguf.TypeQ6_K, 0.02, 0},
		{gguf.TypeF16, 0.0003, 0},
	}
	for _, tt := range tests {
		t.Run(tt.typ.String()+"/normal", func(t *testing.T) {
			rmse, rms := qtRMSE(normal, qtRoundTrip(t, normal, tt.typ))
			t.Logf("relative RMSE %.5f", rmse/rms)
			assert.Less(t, rmse/rms, tt.maxRel)
			assert.Greater(t, rmse, 0.0)
		})
		t.Run(tt.typ.String()+"/test-quantize-fns", func(t *testing.T) {
			const n = 32 * 128
			x := make([]float32, n)
			for i := range x {
				x[i] = 0.1 + 2*float32(math.Cos(float64(i)))
			}
			rmse, _ := qtRMSE(x, qtRoundTrip(t, x, tt.typ))
			total := rmse * math.Sqrt(n) / n
			t.Logf("ggml total quantization error %.6f", total)
			maxTotal := tt.maxTotal
			if maxTotal == 0 {
				maxTotal = 0.002
			}
			assert.LessOrEqual(t, total, maxTotal)
		})
	}
}

// TestQuantizeFixedPoint checks that quantizing dequantized data gives the
// same bytes back: the block maximum dequantizes to exactly ±127·d (Q8_0),
// -8·d (Q4_0) or -16·d (Q5_0), which gives back the same f16 scale.
func TestQuantizeFixedPoint(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	x := make([]float32, 1<<14)
	for i := range x {
		x[i] = float32(rng.NormFloat64() * math.Exp(rng.NormFloat64())) // varying block scales
	}
	for _, typ := range []gguf.Type{gguf.TypeQ8_0, gguf.TypeQ4_0, gguf.TypeQ5_0} {
		t.Run(typ.String(), func(t *testing.T) {
			size := len(x) / 32 * typ.TypeSize()
			q1 := make([]byte, size)
			require.NoError(t, gguf.Quantize(q1, x, typ))
			y := make([]float32, len(x))
			require.NoError(t, gguf.Dequantize(y, q1, typ))
			q2 := make([]byte, size)
			require.NoError(t, gguf.Quantize(q2, y, typ))
			assert.Equal(t, q1, q2)
		})
	}
}

func TestQuantizeErrors(t *testing.T) {
	tests := []struct {
		name string
		typ  gguf.Type
		n    int
		dst  int
	}{
		{"unknown type", gguf.Type(200), 32, 34},
		{"type without a quantizer", gguf.TypeIQ4_XS, 256, 136},
		{"partial Q8_0 block", gguf.TypeQ8_0, 33, 68},
		{"partial Q4_K super-block", gguf.TypeQ4_K, 32, 144},
		{"short destination", gguf.TypeQ4_0, 64, 35},
		{"long destination", gguf.TypeQ8_0, 32, 35},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Error(t, gguf.Quantize(make([]byte, tt.dst), make([]float32, tt.n), tt.typ))
		})
	}
	assert.NoError(t, gguf.Quantize(nil, nil, gguf.TypeQ8_0), "zero elements")
}

func TestCanQuantize(t *testing.T) {
	for _, typ := range gguf.Types() {
		var want bool
		switch typ {
		case gguf.TypeF32, gguf.TypeF16, gguf.TypeQ4_0, gguf.TypeQ4_1, gguf.TypeQ5_0, gguf.TypeQ5_1, gguf.TypeQ8_0,
			gguf.TypeIQ4_NL, gguf.TypeQ2_K, gguf.TypeQ3_K, gguf.TypeQ4_K, gguf.TypeQ5_K, gguf.TypeQ6_K:
			want = true
		}
		assert.Equal(t, want, typ.CanQuantize(), "%s", typ)
	}
}
